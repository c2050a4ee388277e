// Command imgbuild packs static binaries into FROM-scratch images without Docker: one
// single-layer image per platform, written as an OCI image-layout tarball holding a
// multi-platform index (for releases and registries) and, for one platform, a docker-archive
// tarball that `ctr images import` loads into a local containerd; -push sends the index to a
// registry (a release pushes the shadow's).
//
//	imgbuild -name ghcr.io/kubectl-kt/shadow:v1.0.0 -user 65532:65532 \
//	    -bin linux/amd64=dist/shadow-amd64 -bin linux/arm64=dist/shadow-arm64 \
//	    -entrypoint /shadow -oci shadow-oci.tar -docker shadow-amd64.tar -docker-platform linux/amd64
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// busybox applets linked into /bin when -busybox is given (the test images and the test
// cluster's: a shell and the tools the tests and `kubectl exec` use).
var applets = []string{"sh", "ash", "ls", "cat", "echo", "env", "ps", "sleep", "wget", "nc", "nslookup",
	"ip", "ifconfig", "route", "netstat", "hostname", "id", "mkdir", "rm", "cp", "mv", "grep", "sed", "awk",
	"head", "tail", "vi", "kill", "top", "df", "du", "find", "xargs", "tr", "cut", "sort", "uniq", "wc",
	"date", "true", "false", "test", "[", "printf", "chmod", "chown", "ln", "touch", "uname", "whoami",
	"tee", "which", "timeout", "seq", "sha256sum", "md5sum", "dd"}

var epoch = time.Unix(0, 0)

func main() {
	ref := flag.String("name", "", "image reference")
	entry := flag.String("entrypoint", "", "entrypoint (default /<basename of the binary>)")
	user := flag.String("user", "65532:65532", "numeric uid:gid the image runs as")
	ociOut := flag.String("oci", "", "write an OCI image-layout tarball with every platform")
	dockerOut := flag.String("docker", "", "write a docker-archive tarball of -docker-platform")
	dockerPlatform := flag.String("docker-platform", "linux/amd64", "platform of the docker-archive")
	bb := flag.String("busybox", "", "static busybox to add with applet links (test images)")
	var bins, files multi
	flag.Var(&bins, "bin", "os/arch=path of the binary for that platform (repeatable)")
	flag.Var(&files, "file", "host=/path/in/image, added to every platform (repeatable)")
	push := flag.String("push", "", "push the multi-platform index to this reference (REGISTRY/REPO:TAG), with docker login's credentials, or $REGISTRY_USERNAME and $REGISTRY_PASSWORD")
	digestFile := flag.String("digest-file", "", "with -push, write REFERENCE@DIGEST of the pushed index here")
	flag.Parse()
	if *ref == "" || len(bins) == 0 || (*ociOut == "" && *dockerOut == "" && *push == "") {
		log.Fatal("need -name, at least one -bin, and -oci, -docker or -push")
	}
	tag, err := name.NewTag(*ref, name.WeakValidation)
	must(err)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var dockerImg v1.Image
	for _, b := range bins {
		plat, bin, ok := strings.Cut(b, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 {
			log.Fatalf("-bin %q: want os/arch=path", b)
		}
		ep := *entry
		if ep == "" {
			ep = "/" + path.Base(bin)
		}
		ents := []entryT{{src: bin, dst: ep, mode: 0o755}}
		for _, f := range files {
			h, c, ok := strings.Cut(f, "=")
			if !ok {
				log.Fatalf("-file %q: want host=/in/image", f)
			}
			ents = append(ents, entryT{src: h, dst: c, mode: 0o755})
		}
		if *bb != "" {
			ents = append(ents, entryT{src: *bb, dst: "/bin/busybox", mode: 0o755})
			for _, a := range applets {
				ents = append(ents, entryT{dst: "/bin/" + a, link: "busybox"})
			}
		}
		img := image(osName, arch, ep, *user, ents)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform:    &v1.Platform{OS: osName, Architecture: arch},
				Annotations: map[string]string{"org.opencontainers.image.ref.name": tag.String()},
			},
		})
		if plat == *dockerPlatform {
			dockerImg = img
		}
		d, _ := img.Digest()
		fmt.Printf("%s %s %s\n", tag, plat, d)
	}
	if *dockerOut != "" {
		if dockerImg == nil {
			log.Fatalf("no -bin for -docker-platform %s", *dockerPlatform)
		}
		must(tarball.WriteToFile(*dockerOut, tag, dockerImg))
	}
	if *ociOut != "" {
		dir, err := os.MkdirTemp("", "imgbuild")
		must(err)
		defer os.RemoveAll(dir)
		p, err := layout.Write(dir, empty.Index)
		must(err)
		must(p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag.String()})))
		must(tarDir(dir, *ociOut))
	}
	if *push != "" {
		dst, err := name.NewTag(*push, name.WeakValidation)
		must(err)
		auth := remote.WithAuthFromKeychain(authn.DefaultKeychain) // docker login's credentials
		if u := os.Getenv("REGISTRY_USERNAME"); u != "" {
			auth = remote.WithAuth(&authn.Basic{Username: u, Password: os.Getenv("REGISTRY_PASSWORD")})
		}
		must(remote.WriteIndex(dst, idx, auth))
		d, err := idx.Digest()
		must(err)
		fmt.Printf("pushed %s@%s\n", dst, d)
		if *digestFile != "" {
			must(os.WriteFile(*digestFile, []byte(dst.String()+"@"+d.String()+"\n"), 0o644))
		}
	}
}

type entryT struct {
	src, dst string
	mode     int64
	link     string
}

// image builds one single-layer image for a platform.
func image(osName, arch, entry, user string, ents []entryT) v1.Image {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mkdirs := func(p string) {
		var parts []string
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			parts = append(parts, d)
		}
		sort.Strings(parts)
		for _, d := range parts {
			if !dirs[d] {
				dirs[d] = true
				must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}))
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	gen := map[string]string{
		"/etc/passwd":        "root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
		"/etc/group":         "root:x:0:\nnogroup:x:65534:\n",
		"/etc/nsswitch.conf": "hosts: files dns\n",
	}
	if uid != "0" && uid != "65534" {
		gen["/etc/passwd"] += "nonroot:x:" + uid + ":" + uid + ":nonroot:/:/sbin/nologin\n"
		gen["/etc/group"] += "nonroot:x:" + uid + ":\n"
	}
	keys := make([]string, 0, len(gen))
	for k := range gen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mkdirs("/tmp/x")
	for _, k := range keys {
		mkdirs(k)
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(k, "/"), Mode: 0o644, Size: int64(len(gen[k])), ModTime: epoch}))
		_, err := tw.Write([]byte(gen[k]))
		must(err)
	}
	for _, e := range ents {
		mkdirs(e.dst)
		if e.link != "" {
			must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(e.dst, "/"), Linkname: e.link, Mode: 0o777, ModTime: epoch}))
			continue
		}
		b, err := os.ReadFile(e.src)
		must(err)
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(e.dst, "/"), Mode: e.mode, Size: int64(len(b)), ModTime: epoch}))
		_, err = tw.Write(b)
		must(err)
	}
	must(tw.Close())
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil }, tarball.WithMediaType(types.OCILayer))
	must(err)
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	must(err)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	must(err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{entry}
	cf.Config.User = user
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cf)
	must(err)
	return img
}

// tarDir writes the files under dir into a tarball at out.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime = filepath.ToSlash(rel), epoch
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
