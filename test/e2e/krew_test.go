//go:build e2e

package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestKrewInstall installs the snapshot release for real with krew, from the manifest that
// make release-snapshot generates from the archives' checksums (dist/release/krew.yaml, made
// as a release makes plugins/krew.yaml), then runs kubectl kt
// version and connect through kubectl's plugin mechanism.
func TestKrewInstall(t *testing.T) {
	nothingLeftBehind(t)
	tools := ktRoot + "/tools"
	archives, _ := filepath.Glob("../../dist/release/kubectl-kt_*_linux_" + runtime.GOARCH + ".tar.gz")
	if len(archives) != 1 {
		t.Fatalf("want one snapshot archive for linux/%s in dist/release (run make release-snapshot), got %v", runtime.GOARCH, archives)
	}
	archive, _ := filepath.Abs(archives[0])
	manifest, _ := filepath.Abs("../../dist/release/krew.yaml")
	// krew's validator wants the file named after the plugin; it installs for real below
	dir := t.TempDir()
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "kt.yaml"), b, 0o644)
	if r := runCmd(t, time.Minute, tools+"/validate-krew-manifest", "-skip-install", "-manifest", filepath.Join(dir, "kt.yaml")); r.Code != 0 {
		t.Fatalf("krew's manifest validation:\n%s", r)
	}
	// kubectl krew, installed the way krew installs itself: kubectl-krew on PATH
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	k, _ := os.ReadFile(tools + "/krew")
	os.WriteFile(filepath.Join(bin, "kubectl-krew"), k, 0o755)
	root := filepath.Join(dir, "krew-root")
	env := []string{"env", "KREW_ROOT=" + root, "PATH=" + root + "/bin:" + bin + ":" + os.Getenv("PATH")}
	r := runCmd(t, 2*time.Minute, env[0], append(env[1:], "kubectl", "krew", "install", "--manifest="+manifest, "--archive="+archive)...)
	if r.Code != 0 || !strings.Contains(r.Stderr+r.Stdout, "Installed plugin: kt") {
		t.Fatalf("kubectl krew install:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "kubectl-kt")); err != nil {
		t.Fatalf("krew did not link kubectl-kt: %v", err)
	}
	// krew links only kubectl-kt; the caveats it printed give the line that puts
	// kubectl_complete-kt on PATH, and kubectl then completes kubectl kt through it.
	var link string
	for _, l := range strings.Split(r.Stdout+r.Stderr, "\n") {
		if strings.Contains(l, "kubectl_complete-kt") && strings.Contains(l, "printf") {
			link = strings.TrimLeft(strings.TrimSpace(l), "| ")
		}
	}
	if link == "" {
		t.Fatalf("krew's caveats give no line to link kubectl_complete-kt:\n%s", r)
	}
	if r := runCmd(t, time.Minute, env[0], append(env[1:], "HOME="+dir, "sh", "-c", link)...); r.Code != 0 {
		t.Fatalf("the caveats' line: %s\n%s", link, r)
	}
	if r := laptop(t, append(env, "kubectl", "__complete", "kt", "exc")...); !strings.Contains(r.Stdout, "exchange") {
		t.Errorf("kubectl kt exc<TAB> after the caveats' line:\n%s", r)
	}
	r = laptop(t, append(env, "kubectl", "kt", "--kubeconfig", laptopKubecfg, "version")...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "Server Version: v1.34.4") || !strings.Contains(r.Stdout, "snapshot") {
		t.Errorf("kubectl kt version from the krew install:\n%s", r)
	}
	// connect from the krew install (its version's shadow image is the snapshot's, built by
	// goreleaser and loaded into the cluster here)
	img, _ := filepath.Glob("../../dist/shadow/shadow-image_*_linux_" + runtime.GOARCH + ".docker.tar")
	if len(img) != 1 {
		t.Fatalf("no snapshot shadow image: %v", img)
	}
	if r := runCmd(t, time.Minute, "../../hack/load-images.sh", img[0]); r.Code != 0 {
		t.Fatalf("load the snapshot shadow image: %s", r)
	}
	p := startProc(t, "ip", append(append([]string{"netns", "exec", laptopNetns}, env...), "kubectl", "kt", "--kubeconfig", laptopKubecfg, "-n", testNamespace, "connect", "--shadow-expire-after", "15s")...)
	p.WaitFor("Connected", 60*time.Second)
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/via-krew"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("curl through connect installed by krew:\n%s", r)
	}
	if code := p.Stop(syscall.SIGINT, 30*time.Second); code != 0 {
		t.Errorf("connect exit %d:\n%s", code, p.Output())
	}
}

// TestShadowImageFromARegistry publishes the snapshot's shadow image as a release does
// (hack/shadow-release.sh, goreleaser's before hook, pushing the multi-arch index) to a real OCI
// registry on this machine, points the test cluster's containerd at it for ghcr.io, and runs
// the snapshot's kubectl-kt connect with its default image: the kubelet pulls the shadow by
// the released name, never imported by hand.
func TestShadowImageFromARegistry(t *testing.T) {
	nothingLeftBehind(t)
	meta, err := os.ReadFile("../../dist/release/metadata.json")
	if err != nil {
		t.Fatalf("no snapshot release (run make release-snapshot): %v", err)
	}
	var m struct{ Version string }
	if err := json.Unmarshal(meta, &m); err != nil || m.Version == "" {
		t.Fatalf("metadata.json: %v %s", err, meta)
	}
	image := "ghcr.io/kubectl-kt/shadow:v" + m.Version
	reg := startProc(t, testappBin(t), "registry", "-listen", "127.0.0.1:5111")
	reg.WaitFor("testapp registry on", 10*time.Second)

	out := t.TempDir()
	if r := runCmd(t, 5*time.Minute, "env", "-C", "../..", "KT_SHADOW_OUT="+out, "hack/shadow-release.sh", m.Version, "e2e", "127.0.0.1:5111/kubectl-kt/shadow"); r.Code != 0 {
		t.Fatalf("shadow-release.sh: %s", r)
	}
	pushed, err := os.ReadFile(filepath.Join(out, "shadow-image.txt"))
	if err != nil || !strings.HasPrefix(string(pushed), "127.0.0.1:5111/kubectl-kt/shadow:v"+m.Version+"@sha256:") {
		t.Fatalf("the digest the release records: %q %v", pushed, err)
	}
	ref, _ := name.ParseReference(strings.TrimSpace(string(pushed)))
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	blobs := []string{ref.Identifier()} // the index, its manifests, their configs and layers
	for _, d := range im.Manifests {
		if d.Platform != nil {
			platforms = append(platforms, d.Platform.OS+"/"+d.Platform.Architecture)
		}
		blobs = append(blobs, d.Digest.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, mf.Config.Digest.String())
		for _, l := range mf.Layers {
			blobs = append(blobs, l.Digest.String())
		}
	}
	if strings.Join(platforms, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("the pushed index has %v, want linux/amd64 and linux/arm64", platforms)
	}

	// containerd pulls ghcr.io from the registry here (the recipe sends every other pull to
	// a closed port), and has no copy of the image yet.
	hosts := ktRoot + "/containerd/certs.d/ghcr.io/hosts.toml"
	orig, err := os.ReadFile(hosts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(hosts, orig, 0o644) })
	os.WriteFile(hosts, []byte("server = \"http://127.0.0.1:1\"\n[host.\"http://127.0.0.1:5111\"]\n  capabilities = [\"pull\", \"resolve\"]\n"), 0o644)
	ctr := []string{"--address", ktRoot + "/containerd/run/containerd.sock", "-n", "k8s.io"}
	// the image by its tag and by its digest (a pulled or imported image has both names)
	for _, l := range strings.Split(runCmd(t, time.Minute, "ctr", append(ctr, "images", "ls")...).Stdout, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == image {
			runCmd(t, time.Minute, "ctr", append(ctr, "images", "rm", "--sync", image, "ghcr.io/kubectl-kt/shadow@"+f[2])...)
		}
	}
	if r := runCmd(t, time.Minute, "ctr", append(ctr, "images", "ls", "-q")...); strings.Contains(r.Stdout, image) {
		t.Fatalf("%s still in containerd:\n%s", image, r)
	}
	runCmd(t, time.Minute, "ctr", append(append(ctr, "content", "rm"), blobs...)...) // none of it left to reuse
	os.Remove(ktRoot + "/images/.imported-shadow-image_" + m.Version + "_linux_" + runtime.GOARCH + ".docker.tar")

	archives, _ := filepath.Glob("../../dist/release/kubectl-kt_*_linux_" + runtime.GOARCH + ".tar.gz")
	if len(archives) != 1 {
		t.Fatalf("want one snapshot archive, got %v", archives)
	}
	pushedLog := len(reg.Output())
	bin := filepath.Join(t.TempDir(), "kubectl-kt")
	os.WriteFile(bin, untgz(t, archives[0])["kubectl-kt"], 0o755)
	p := startProc(t, "ip", "netns", "exec", laptopNetns, bin, "--kubeconfig", laptopKubecfg, "-n", testNamespace, "connect", "--shadow-expire-after", "15s")
	p.WaitFor("Connected", 90*time.Second)
	if r := laptop(t, "curl", "-sS", "-m", "10", "http://web/via-registry"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("curl through connect with the pulled shadow:\n%s", r)
	}
	if code := p.Stop(syscall.SIGINT, 30*time.Second); code != 0 {
		t.Errorf("connect exit %d:\n%s", code, p.Output())
	}
	// containerd resolves the tag (HEAD), then fetches the index, the platform's manifest and
	// its blobs by digest
	pulls := reg.Output()[pushedLog:]
	if !strings.Contains(pulls, "HEAD /v2/kubectl-kt/shadow/manifests/v"+m.Version) || !strings.Contains(pulls, "GET /v2/kubectl-kt/shadow/blobs/sha256:") {
		t.Errorf("no pull of %s from the registry:\n%s", image, pulls)
	}
}

// TestReleaseCarriesWintun checks the snapshot release's archives: each Windows binary embeds
// the pinned wintun.dll of its own architecture (and not the other's) and its zip has
// Wintun's licence, so that connect on Windows needs no download; no other binary carries it.
func TestReleaseCarriesWintun(t *testing.T) {
	dll := map[string][]byte{}
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := os.ReadFile("../../pkg/tun/wintun/" + arch + "/wintun.dll")
		if err != nil {
			t.Fatal(err)
		}
		dll[arch] = b
	}
	license, _ := os.ReadFile("../../pkg/tun/wintun/LICENSE.txt")
	for _, arch := range []string{"amd64", "arm64"} {
		zips, _ := filepath.Glob("../../dist/release/kubectl-kt_*_windows_" + arch + ".zip")
		if len(zips) != 1 {
			t.Fatalf("want one windows/%s archive in dist/release (run make release-snapshot), got %v", arch, zips)
		}
		files := unzip(t, zips[0])
		exe := files["kubectl-kt.exe"]
		if len(exe) == 0 {
			t.Fatalf("%s: no kubectl-kt.exe", zips[0])
		}
		for a, d := range dll {
			if got, want := bytes.Contains(exe, d), a == arch; got != want {
				t.Errorf("windows/%s kubectl-kt.exe carries the %s wintun.dll: %v, want %v", arch, a, got, want)
			}
		}
		if !bytes.Equal(files["wintun-LICENSE.txt"], license) || len(license) == 0 {
			t.Errorf("%s: no wintun-LICENSE.txt, or not Wintun's licence", zips[0])
		}
	}
	for _, goos := range []string{"linux", "darwin"} {
		tgz, _ := filepath.Glob("../../dist/release/kubectl-kt_*_" + goos + "_amd64.tar.gz")
		if len(tgz) != 1 {
			t.Fatalf("want one %s/amd64 archive, got %v", goos, tgz)
		}
		if bin := untgz(t, tgz[0])["kubectl-kt"]; len(bin) == 0 || bytes.Contains(bin, dll["amd64"][:4096]) {
			t.Errorf("%s/amd64 kubectl-kt: %d bytes, carries Wintun: %v", goos, len(bin), bytes.Contains(bin, dll["amd64"][:4096]))
		}
	}
}

func unzip(t *testing.T, name string) map[string][]byte {
	t.Helper()
	z, err := zip.OpenReader(name)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	out := map[string][]byte{}
	for _, f := range z.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name], _ = io.ReadAll(r)
		r.Close()
	}
	return out
}

func untgz(t *testing.T, name string) map[string][]byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
	return out
}
