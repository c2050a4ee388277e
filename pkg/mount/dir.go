package mount

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Marker is the file kt puts in a mount root: clean removes only directories that hold it.
const Marker = ".kt-mount"

// dataLink is the link in each mount directory that points at its current content.
const dataLink = "..data"

// Dir is a local directory that holds a container's mounts under their mount paths.
type Dir struct {
	Root    string
	created bool // kt made Root, and removes it whole
	sums    map[string]string
	record  *record
}

// Open makes the mount root: a new private temporary directory when root is empty, else
// root, which must not exist yet or be empty. stateDir keeps a record of it for `kubectl kt
// clean --local-only`, held for the life of the process.
func Open(root, stateDir string) (*Dir, error) {
	d := &Dir{Root: root, sums: map[string]string{}}
	if root == "" {
		r, err := os.MkdirTemp("", "kt-mount-")
		if err != nil {
			return nil, err
		}
		d.Root, d.created = r, true
	} else {
		abs, err := filepath.Abs(root)
		if err != nil {
			return nil, err
		}
		d.Root = abs
		switch es, err := os.ReadDir(abs); {
		case errors.Is(err, os.ErrNotExist):
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return nil, err
			}
			d.created = true
		case err != nil:
			return nil, fmt.Errorf("--mount-root %s: %w", root, err)
		case len(es) > 0:
			return nil, fmt.Errorf("--mount-root %s is not empty: give a new or an empty directory (kt removes what it writes there)", root)
		}
	}
	if err := os.Chmod(d.Root, 0o700); err != nil {
		d.Close()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d.Root, Marker), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o400); err != nil {
		d.Close()
		return nil, err
	}
	rec, err := newRecord(stateDir, d.Root, d.created)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.record = rec
	return d, nil
}

// local is where mount path p lives under the root.
func (d *Dir) local(p string) string {
	return filepath.Join(d.Root, filepath.FromSlash(path.Clean("/"+p)))
}

// Write brings every mount up to date and returns the mount paths whose content changed.
func (d *Dir) Write(ms []Mount) ([]string, error) {
	var changed []string
	for _, m := range ms {
		for _, f := range m.Files {
			if err := checkPath(f.Path, m.File); err != nil {
				return changed, fmt.Errorf("mount %s: %w", m.Path, err)
			}
		}
		sum := checksum(m)
		if d.sums[m.Path] == sum {
			continue
		}
		var err error
		if m.File {
			err = writeFile(d.local(m.Path), m.Files[0])
		} else {
			err = writeDir(d.local(m.Path), m.Files)
		}
		if err != nil {
			return changed, fmt.Errorf("mount %s: %w", m.Path, err)
		}
		d.sums[m.Path] = sum
		changed = append(changed, m.Path)
	}
	return changed, nil
}

// Close removes what kt wrote: the root it made, or the contents of the one it was given.
func (d *Dir) Close() error {
	err := removeRoot(d.Root, d.created)
	if d.record != nil {
		d.record.release(err == nil)
	}
	return err
}

func removeRoot(root string, created bool) error {
	if created {
		return os.RemoveAll(root)
	}
	es, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range es {
		errs = append(errs, os.RemoveAll(filepath.Join(root, e.Name())))
	}
	return errors.Join(errs...)
}

// checkPath refuses a file path that would leave its mount or clash with the data links: the
// API server validates them, but a file kt writes for a cluster's object is checked here too.
func checkPath(p string, single bool) error {
	if single && p == "" {
		return nil
	}
	if p == "" || path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("file path %q is not a clean relative path", p)
	}
	for _, e := range strings.Split(p, "/") {
		if strings.HasPrefix(e, "..") {
			return fmt.Errorf("file path %q: no element may start with \"..\"", p)
		}
	}
	return nil
}

func checksum(m Mount) string {
	h := sha256.New()
	fmt.Fprintf(h, "%v\n", m.File)
	for _, f := range m.Files {
		fmt.Fprintf(h, "%q %o %d\n", f.Path, f.Mode, len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileMode is a file's mode as kt writes it: read-only, and always readable by its owner.
func fileMode(m uint32) os.FileMode { return os.FileMode(m&0o777&^0o222 | 0o400) }

// writeFile replaces the file at p (a subPath mount) in one rename.
func writeFile(p string, f File) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".kt-tmp"
	os.Remove(tmp)
	if err := os.WriteFile(tmp, f.Data, fileMode(f.Mode)); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// writeDir lays files out in dir as the kubelet's atomic writer does: a new timestamped
// directory with the content, the ..data link swapped to it in one rename, a link per
// top-level name through ..data, and the old content removed.
func writeDir(dir string, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	top := map[string]bool{}
	for _, f := range files {
		p := filepath.Join(tsDir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, fileMode(f.Mode)); err != nil {
			return err
		}
		top[strings.SplitN(f.Path, "/", 2)[0]] = true
	}
	tmp := filepath.Join(dir, dataLink+"_tmp")
	os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return err
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		n := e.Name()
		switch {
		case n == dataLink || n == ts:
		case strings.HasPrefix(n, ".."):
			os.RemoveAll(filepath.Join(dir, n)) // an earlier content
		case e.Type()&os.ModeSymlink != 0 && !top[n]:
			if t, _ := os.Readlink(filepath.Join(dir, n)); strings.HasPrefix(t, dataLink+"/") {
				os.Remove(filepath.Join(dir, n)) // a file the content no longer has
			}
		}
	}
	for n := range top {
		link := filepath.Join(dir, n)
		if t, err := os.Readlink(link); err == nil && t == dataLink+"/"+n {
			continue
		}
		if err := os.Symlink(dataLink+"/"+n, link); err != nil {
			return err
		}
	}
	return nil
}

// Keep refreshes the files every interval until ctx ends: the ConfigMaps and Secrets are read
// again, and the pod (for its downward-API fields) while it exists. What changed is said in
// one line; an API server that does not answer is said once, and again when it answers.
func (d *Dir) Keep(ctx context.Context, r *Resolver, pod *corev1.Pod, container string, interval time.Duration, w io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
			pod = p
		} else if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			if !failing {
				fmt.Fprintf(w, "kt: files not refreshed (%v); retrying\n", err)
			}
			failing = true
			continue
		}
		ms, _, err := r.Resolve(ctx, pod, container)
		if err == nil {
			var changed []string
			changed, err = d.Write(ms)
			if len(changed) > 0 {
				fmt.Fprintf(w, "kt: updated %s\n", strings.Join(changed, ", "))
			}
		}
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				fmt.Fprintf(w, "kt: files not refreshed (%v); retrying\n", err)
			}
			failing = true
		case err == nil && failing:
			fmt.Fprintln(w, "kt: files are refreshed again")
			failing = false
		}
	}
}

// record is the note in the state directory that a mount root exists, held locked while its
// process lives: `kubectl kt clean --local-only` removes the roots of records nobody holds.
type record struct {
	path string
	f    *os.File
}

// Record is what a record holds.
type Record struct {
	PID     int    `json:"pid"`
	Root    string `json:"root"`
	Created bool   `json:"created"`
}

func newRecord(stateDir, root string, created bool) (*record, error) {
	if stateDir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(stateDir, fmt.Sprintf("mount-%d.json", os.Getpid()))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, err
	}
	b, _ := json.Marshal(Record{PID: os.Getpid(), Root: root, Created: created})
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	return &record{path: p, f: f}, nil
}

func (r *record) release(remove bool) {
	if remove {
		os.Remove(r.path)
	}
	r.f.Close()
}

// CleanStale removes the mount roots whose process is gone (their record is not locked), and
// their records; with dryRun it only lists them.
func CleanStale(stateDir string, dryRun bool) ([]Record, error) {
	ps, _ := filepath.Glob(filepath.Join(stateDir, "mount-*.json"))
	var gone []Record
	var errs []error
	for _, p := range ps {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if held(f) { // its process lives
			f.Close()
			continue
		}
		var rec Record
		b, _ := io.ReadAll(io.LimitReader(f, 1<<16))
		f.Close()
		if json.Unmarshal(b, &rec) != nil || rec.Root == "" {
			if !dryRun {
				os.Remove(p)
			}
			continue
		}
		gone = append(gone, rec)
		if dryRun {
			continue
		}
		if _, err := os.Stat(filepath.Join(rec.Root, Marker)); err == nil {
			if err := removeRoot(rec.Root, rec.Created); err != nil {
				errs = append(errs, fmt.Errorf("mount root %s: %w", rec.Root, err))
				continue
			}
		}
		os.Remove(p)
	}
	return gone, errors.Join(errs...)
}
