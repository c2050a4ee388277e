// Package hack holds the checks of the repository's scripts.
package hack

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// packages reads packages.txt.
func packages(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pkgs := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if fields := strings.Fields(line); len(fields) > 0 {
			pkgs[fields[0]] = true
		}
	}
	return pkgs
}

// words returns every word of the scripts and of the e2e tests' string literals (the programs
// they run and their arguments, shell scripts included), with the file each was first seen in.
func words(t *testing.T) map[string]string {
	t.Helper()
	word := regexp.MustCompile(`[A-Za-z0-9_][A-Za-z0-9_.+-]*`)
	out := map[string]string{}
	add := func(file, text string) {
		for _, w := range word.FindAllString(text, -1) {
			if _, ok := out[w]; !ok {
				out[w] = file
			}
		}
	}
	goFiles, _ := filepath.Glob("../test/e2e/*.go")
	for _, f := range goFiles {
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if _, ok := n.(*ast.ImportSpec); ok {
				return false
			}
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, _ := strconv.Unquote(lit.Value)
				add(f, s)
			}
			return true
		})
	}
	scripts, _ := filepath.Glob("*.sh")
	more, _ := filepath.Glob("cluster/*.sh")
	for _, f := range append(append(scripts, more...), "../Makefile", "../.ci/run") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		add(f, string(b))
	}
	return out
}

// notRun are the words of the tests and scripts that name a program on some machines but are
// not run on this one: each says what the word is there.
var notRun = map[string]string{
	"wget":    "run in the cluster's client pod (busybox), never on the machine",
	"kubectl": "the test cluster's own, built by hack/cluster/build.sh",
	"route":   "ip route",
	"patch":   "kubectl patch",
	"time":    "dig's +time= option",
	"zip":     "a file name's extension (the tests read zips with archive/zip)",
	"file":    "a shell variable",
	"systemd": "a path (/run/systemd)",
	"node":    "a Kubernetes node",
	"as":      "kubectl's --as",
	"ld":      "a shell variable (go build -ldflags)",
	"opt":     "a path (/opt/cni)",
}

// Every program the tests and scripts run comes from a package of packages.txt (or one that
// every Debian has): a program of another package works where it happens to be installed and
// fails on a fresh machine (dig and sudo did, in the README's make test). Words that are no
// program of a package cost nothing; one that names a program is taken as its use.
func TestPackagesCoverWhatTestsRun(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian-based system: no package database to check against")
	}
	listed := packages(t)
	var paths []string
	byPath := map[string]string{} // path -> word
	where := words(t)
	for w := range where {
		for _, dir := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
			p := filepath.Join(dir, w)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				paths = append(paths, p)
				byPath[p] = w
			}
		}
	}
	sort.Strings(paths)
	// dpkg -S exits 1 when some path is no package's: the others are still listed.
	out, _ := exec.Command("dpkg", append([]string{"-S"}, paths...)...).Output()
	owner := map[string][]string{} // word -> packages
	for _, line := range strings.Split(string(out), "\n") {
		pkgList, path, ok := strings.Cut(line, ": ")
		if !ok || strings.HasPrefix(line, "diversion ") {
			continue
		}
		for _, p := range strings.Split(pkgList, ", ") {
			p, _, _ = strings.Cut(p, ":")
			owner[byPath[path]] = append(owner[byPath[path]], p)
		}
	}
	// Always there: what every Debian has (Essential, or of priority required), and what a
	// listed package depends on (dnsutils is bind9-dnsutils now).
	present := map[string]bool{}
	depends := map[string][]string{}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 4 {
				continue
			}
			present[f[0]] = f[1] == "yes" || f[2] == "required"
			for _, d := range strings.Split(f[3], ",") {
				for _, alt := range strings.Split(d, "|") {
					if name := strings.Fields(alt); len(name) > 0 {
						n, _, _ := strings.Cut(name[0], ":")
						depends[f[0]] = append(depends[f[0]], n)
					}
				}
			}
		}
	}
	covered := map[string]bool{}
	var cover func(p string)
	cover = func(p string) {
		if covered[p] {
			return
		}
		covered[p] = true
		for _, d := range depends[p] {
			cover(d)
		}
	}
	for p := range listed {
		cover(p)
	}
	for w, pkgs := range owner {
		if why, ok := notRun[w]; ok {
			t.Logf("%q: %s", w, why)
			continue
		}
		ok := false
		for _, p := range pkgs {
			ok = ok || covered[p] || present[p]
		}
		if !ok {
			t.Errorf("%s runs %q, from Debian package %s, which hack/packages.txt does not list: add it there", where[w], w, strings.Join(pkgs, " or "))
		}
	}
	if len(owner) < 10 {
		t.Errorf("found only %d programs of packages in the tests and scripts: the scan is broken", len(owner))
	}
}

// A missing package is named at once, with the command that installs it, and nothing else is
// done; the list itself is installed here.
func TestDepsNamesMissingPackages(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian-based system")
	}
	if out, err := exec.Command("./deps.sh", "--check").CombinedOutput(); err != nil {
		t.Errorf("deps.sh --check on this machine: %v\n%s", err, out)
	}
	dir := t.TempDir()
	list, _ := os.ReadFile("packages.txt")
	script, _ := os.ReadFile("deps.sh")
	os.WriteFile(filepath.Join(dir, "packages.txt"), append(list, "kt-no-such-package # a test\n"...), 0o644)
	os.WriteFile(filepath.Join(dir, "deps.sh"), script, 0o755)
	out, err := exec.Command(filepath.Join(dir, "deps.sh"), "--check").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err == nil || len(lines) != 1 || !strings.Contains(lines[0], "missing Debian packages: kt-no-such-package;") ||
		!strings.Contains(lines[0], "apt-get install -y --no-install-recommends kt-no-such-package") {
		t.Errorf("deps.sh --check with a missing package: %v\n%s", err, out)
	}
}

// The committed krew manifest is what krew-manifest.sh writes for the archives it names: the
// same version and checksums in, the same file out, byte for byte.
func TestKrewManifestIsGenerated(t *testing.T) {
	committed, err := os.ReadFile("../plugins/krew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`(?m)^  version: v(\S+)$`).FindSubmatch(committed)
	if version == nil {
		t.Fatal("plugins/krew.yaml has no spec.version")
	}
	dist := t.TempDir()
	var sums strings.Builder
	re := regexp.MustCompile(`(?m)^    uri: \S+/([^/\s]+)\n    sha256: ([0-9a-f]{64})$`)
	for _, m := range re.FindAllSubmatch(committed, -1) {
		sums.WriteString(string(m[2]) + "  " + string(m[1]) + "\n")
	}
	if err := os.WriteFile(filepath.Join(dist, "checksums.txt"), []byte(sums.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "krew-manifest.sh", string(version[1]), dist).Output()
	if err != nil {
		t.Fatalf("krew-manifest.sh: %v", err)
	}
	if string(out) != string(committed) {
		t.Errorf("plugins/krew.yaml is not what hack/krew-manifest.sh writes for its archives: regenerate it (make krew-manifest)")
	}
}
