# kubectl kt: build, images, the local test cluster, tests, benchmarks.
# `make demo` and `make test` work on a fresh machine (as root; see README).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export PATH := /usr/local/go/bin:/var/tmp/ktcluster/bin:$(PATH)
export GOFLAGS ?= -mod=mod

VERSION ?= v0.1.0-dev
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG     := github.com/kubectl-kt/kt
LDFLAGS := -s -w -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Commit=$(COMMIT)
IMAGE   ?= ghcr.io/kubectl-kt/shadow:$(VERSION)
TESTAPP := localhost/kt/testapp:e2e

KT_ROOT    := /var/tmp/ktcluster
KUBECONFIG := $(KT_ROOT)/kubeconfig
CTR        := ctr --address $(KT_ROOT)/containerd/run/containerd.sock -n k8s.io
GOSRC      := $(shell find cmd pkg shadow hack/imgbuild test/e2e/testapp -name '*.go' 2>/dev/null) go.mod go.sum

TOOLS      := $(KT_ROOT)/tools
GORELEASER := $(TOOLS)/goreleaser
KREW       := $(TOOLS)/krew

.PHONY: help e2e deps fuzz resolved all build tools release release-snapshot krew-manifest bench-scale bench-wan image test-images cluster-up cluster-down load-images test test-unit test-e2e demo bench lint clean

all: build image

help:
	@echo 'make demo                 the local cluster, a sample app, and kubectl kt connect from the "laptop" netns'
	@echo 'make test                 unit tests (-race), fuzzers, then every e2e test (what CI runs)'
	@echo 'make test-unit            go vet, unit tests with -race, each fuzzer on FUZZTIME (20000x) inputs'
	@echo 'make e2e RUN=TestMesh     the e2e tests matching RUN (a go test -run regexp) against the cluster'
	@echo 'make bench                benchmarks against the local cluster (docs/benchmarks.md)'
	@echo 'make bench-scale          connect with 2000 and with 10000 Services'
	@echo 'make bench-wan            round trips over a 40 ms link to the API server'
	@echo 'make lint                 go vet (every OS), gofmt, the bundled wintun signature'
	@echo 'make fuzz FUZZTIME=10m    every fuzzer, longer'
	@echo 'make build | image        bin/kubectl-kt | the shadow image tarballs in dist/images'
	@echo 'make cluster-up | cluster-down | load-images   the local cluster (hack/cluster/README.md)'
	@echo 'make release-snapshot     the whole release without publishing, in dist/release'
	@echo 'make release              publish a release (a tag, GITHUB_TOKEN), then plugins/krew.yaml for it'

build: bin/kubectl-kt

bin/kubectl-kt: $(GOSRC)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/kubectl-kt

bin/shadow-linux-%: $(GOSRC)
	CGO_ENABLED=0 GOOS=linux GOARCH=$* go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./shadow

bin/testapp: $(GOSRC)
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $@ ./test/e2e/testapp

bin/delayproxy: $(GOSRC)
	go build -o $@ ./hack/delayproxy

bin/imgbuild: $(GOSRC)
	go build -o $@ ./hack/imgbuild

# The shadow image: FROM scratch, uid 65532, linux/amd64 and linux/arm64, no Docker.
image: dist/images/shadow-oci.tar dist/images/shadow-amd64.tar

dist/images/shadow-oci.tar dist/images/shadow-amd64.tar &: bin/imgbuild bin/shadow-linux-amd64 bin/shadow-linux-arm64
	@mkdir -p dist/images
	bin/imgbuild -name $(IMAGE) -entrypoint /shadow \
	  -bin linux/amd64=bin/shadow-linux-amd64 -bin linux/arm64=bin/shadow-linux-arm64 \
	  -oci dist/images/shadow-oci.tar -docker dist/images/shadow-amd64.tar -docker-platform linux/amd64

test-images: dist/images/testapp.tar

dist/images/testapp.tar: bin/imgbuild bin/testapp
	@mkdir -p dist/images
	bin/imgbuild -name $(TESTAPP) -user 0:0 -entrypoint /testapp -bin linux/amd64=bin/testapp \
	  -busybox /bin/busybox -docker $@

# The local test cluster (hack/cluster, see its README).
cluster-up: deps
	hack/cluster/up.sh
	$(MAKE) load-images

load-images: image test-images
	@hack/load-images.sh dist/images/shadow-amd64.tar dist/images/testapp.tar

cluster-down:
	hack/cluster/down.sh

# The Debian packages of hack/packages.txt: installed when missing (as root), or named at once.
deps:
	@hack/deps.sh

test: test-unit test-e2e

test-unit: deps
	go vet ./...
	go test -race -count=1 ./...
	$(MAKE) fuzz

# Each fuzzer for FUZZTIME. make test gives each a fixed count of inputs (about 5 s here): a
# -fuzztime of seconds races its own deadline on a busy machine and fails with "context deadline
# exceeded" having found nothing (golang/go#51484); a count has no deadline. By hand, e.g.
# make fuzz FUZZTIME=10m. A failure prints the fuzzer's whole output (the input it wrote).
FUZZTIME ?= 20000x
FUZZERS  := FuzzReadFrame:./pkg/wire FuzzReadAuth:./pkg/wire FuzzReadHellos:./pkg/wire FuzzSession:./pkg/mux \
  FuzzReadConnect:./pkg/agent FuzzProxyHandshake:./pkg/agent FuzzParseRawHead:./pkg/agent/router FuzzDecodeRequest:./pkg/netadmin
fuzz:
	@for f in $(FUZZERS); do \
	  if out=$$(go test -run '^$$' -fuzz "^$${f%%:*}\$$" -fuzztime $(FUZZTIME) $${f#*:} 2>&1); then echo "$${out##*$$'\n'}"; \
	  else echo "$$out"; exit 1; fi; done

# Release tools, built from the Go module proxy (goreleaser v2.14 is the newest for Go 1.26).
tools: $(GORELEASER) $(KREW)

$(GORELEASER):
	GOBIN=$(TOOLS) GOFLAGS= go install github.com/goreleaser/goreleaser/v2@v2.14.0

$(KREW):
	GOBIN=$(TOOLS) GOFLAGS= go install sigs.k8s.io/krew/cmd/krew@v0.4.3 sigs.k8s.io/krew/cmd/validate-krew-manifest@v0.4.3

# A full release build without publishing: archives for 3 OSes x 2 arches, checksums, the shadow
# images for linux/amd64 and arm64, and a krew manifest generated from the archives
# (dist/release/krew.yaml; a release writes plugins/krew.yaml the same way).
release-snapshot: tools
	$(GORELEASER) release --snapshot --clean
	hack/krew-manifest.sh $$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' dist/release/metadata.json) dist/release > dist/release/krew.yaml

# A release, from a checked-out tag with GITHUB_TOKEN set: goreleaser publishes the archives,
# then plugins/krew.yaml is written for them, to commit (hack's TestKrewManifestIsGenerated
# checks that the committed manifest is the script's output for its archives).
release: tools
	$(GORELEASER) release --clean
	$(MAKE) krew-manifest

krew-manifest:
	hack/krew-manifest.sh $$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' dist/release/metadata.json) dist/release > plugins/krew.yaml

test-e2e: deps cluster-up build bin/testapp release-snapshot resolved
	KT_BIN=$(CURDIR)/bin/kubectl-kt KT_IMAGE=$(IMAGE) KT_TESTAPP=$(TESTAPP) \
	  go test -tags e2e -count=1 -timeout 40m -v ./test/e2e 2>&1 | tee $(KT_ROOT)/logs/e2e.log | hack/summarize-go-test.sh

# The e2e tests matching RUN, for the developer loop: no release snapshot unless a release
# test (TestKrewInstall, TestReleaseCarriesWintun) matches.
RUN ?= .
e2e: deps cluster-up build bin/testapp resolved
	@if printf 'TestKrewInstall\nTestReleaseCarriesWintun\n' | grep -qE '$(value RUN)'; then $(MAKE) release-snapshot; fi
	KT_BIN=$(CURDIR)/bin/kubectl-kt KT_IMAGE=$(IMAGE) KT_TESTAPP=$(TESTAPP) KT_E2E_REQUIRED=1 \
	  go test -tags e2e -count=1 -timeout 40m -v -run '$(value RUN)' ./test/e2e 2>&1 | tee $(KT_ROOT)/logs/e2e-run.log | hack/summarize-go-test.sh

resolved:
	hack/resolved.sh

demo: deps cluster-up build
	hack/demo.sh

# connect on a cluster with 2000 Services in 40 namespaces, then with 10000.
bench-scale:
	$(MAKE) bench BENCH=Scale
	KT_BENCH_SERVICES=10000 $(MAKE) bench BENCH=Scale

# Round trips over a 40 ms link to the API server (hack/delayproxy), kt beside kubectl port-forward.
bench-wan:
	$(MAKE) bench BENCH=WAN

# BENCH picks benchmarks by name (make bench BENCH=Run).
BENCH ?= .
bench: deps cluster-up build bin/testapp bin/delayproxy
	KT_BIN=$(CURDIR)/bin/kubectl-kt go test -tags e2e -count=1 -timeout 30m -run '^$$' -bench '$(value BENCH)' -benchtime 1x ./test/e2e | tee $(KT_ROOT)/logs/bench.log

lint: deps
	go vet ./...
	go vet -tags e2e ./test/e2e/...
	@for t in darwin/amd64 darwin/arm64 windows/amd64 windows/arm64; do GOOS=$${t%/*} GOARCH=$${t#*/} go vet ./cmd/... ./pkg/... || exit 1; done
	hack/wintun.sh
	@out=$$(gofmt -l cmd pkg shadow hack test); if [[ -n $$out ]]; then echo "gofmt needed: $$out"; exit 1; fi

clean:
	rm -rf bin dist
