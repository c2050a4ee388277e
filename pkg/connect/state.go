package connect

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/netadmin"
	"github.com/kubectl-kt/kt/pkg/tun"
)

// State is what a running connect has changed on this machine, so that the next connect or
// `kubectl kt clean --local-only` can undo it after a crash. The file is held with an
// exclusive flock for the life of the connect, which the kernel releases even on SIGKILL.
type State struct {
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	Server     string    `json:"server"`
	Context    string    `json:"context,omitempty"`
	Namespace  string    `json:"namespace"`
	NetNS      string    `json:"netns"`
	Shadow     string    `json:"shadow,omitempty"`
	TUN        string    `json:"tun,omitempty"`
	Routes     []string  `json:"routes,omitempty"`
	DNSMode    string    `json:"dnsMode"`
	ResolvConf string    `json:"resolvConf,omitempty"` // path edited (the file keeps its original)
	Hosts      string    `json:"hosts,omitempty"`      // hosts file holding kt's block
	SplitDNS   bool      `json:"splitDNS,omitempty"`   // per-domain DNS entries (macOS, Windows)
	Proxy      string    `json:"proxy,omitempty"`      // SOCKS5 address with --disable-tun
}

// StateDir is where connect keeps its state files.
func StateDir() string {
	if d := os.Getenv("KT_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/kubectl-kt"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "kubectl-kt")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("kubectl-kt-%d", os.Getuid()))
}

// NetNS identifies this process's network namespace: two connects in different namespaces
// (or containers) do not collide.
func NetNS() string {
	l, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "default"
	}
	return strings.Trim(strings.TrimPrefix(l, "net:"), "[]")
}

// statePath is one file per cluster and network namespace: one connect per machine per cluster.
func statePath(server string) string {
	h := sha256.Sum256([]byte(server))
	return filepath.Join(StateDir(), fmt.Sprintf("connect-%s-%s.json", NetNS(), hex.EncodeToString(h[:6])))
}

// Lock holds a state file.
type Lock struct {
	f    *os.File
	path string
}

// ErrRunning is returned when another connect holds the lock.
type ErrRunning struct{ State State }

func (e *ErrRunning) Error() string {
	return fmt.Sprintf("another kubectl kt connect (pid %d, since %s, shadow %s) is already connected to %s from this machine; stop it first, or run 'kubectl kt clean --local-only' if it is gone",
		e.State.PID, e.State.Started.Local().Format(time.Kitchen), e.State.Shadow, e.State.Server)
}

// Acquire takes the lock for server. A state file left by a crashed connect is undone first,
// through admin; recovered reports what was cleaned up.
func Acquire(server string, admin netadmin.Admin) (l *Lock, recovered *State, err error) {
	if err := checkStateDir(StateDir()); err != nil {
		return nil, nil, err
	}
	path := statePath(server)
	f, err := openState(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		st := readState(f)
		f.Close()
		return nil, nil, &ErrRunning{State: st}
	}
	l = &Lock{f: f, path: path}
	if b, _ := io.ReadAll(io.NewSectionReader(f, 0, maxStateSize)); len(b) > 0 {
		var st State
		if json.Unmarshal(b, &st) == nil {
			if err := Undo(&st, admin); err != nil {
				l.Release()
				return nil, nil, fmt.Errorf("undo the leftovers of a crashed connect (pid %d): %w", st.PID, err)
			}
			recovered = &st
		}
		f.Truncate(0)
	}
	return l, recovered, nil
}

// maxStateSize bounds what is read of a state file.
const maxStateSize = 1 << 20

// readState reads the state in f (an empty State if it holds none).
func readState(f *os.File) State {
	var st State
	b, _ := io.ReadAll(io.NewSectionReader(f, 0, maxStateSize))
	json.Unmarshal(b, &st)
	return st
}

// Save records st.
func (l *Lock) Save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	_, err = l.f.WriteAt(b, 0)
	return err
}

// Release removes the state file and unlocks.
func (l *Lock) Release() {
	os.Remove(l.path)
	l.f.Close()
}

// Undo reverts what st records and is still there: resolv.conf, the hosts block, a TUN
// device. Only what is left asks admin (and so perhaps sudo) for anything.
func Undo(st *State, admin netadmin.Admin) error {
	netadmin.Allow(admin, st.ResolvConf, st.Hosts)
	var errs []error
	if st.ResolvConf != "" && dns.HasMarker(st.ResolvConf) {
		if err := admin.RestoreResolvConf(st.ResolvConf); err != nil {
			errs = append(errs, err)
		}
	}
	if st.Hosts != "" && dns.HasHostsBlock(st.Hosts) {
		if err := admin.RemoveHostsBlock(st.Hosts); err != nil {
			errs = append(errs, err)
		}
	}
	if st.SplitDNS {
		if err := dns.RemoveSplitDNS(); err != nil {
			errs = append(errs, err)
		}
	}
	if st.TUN != "" && tun.Exists(st.TUN) {
		if err := admin.RemoveTUN(st.TUN); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CleanLocal undoes every crashed connect's leftovers in this network namespace and
// reports them; running connects are left alone.
func CleanLocal(dryRun bool, admin netadmin.Admin) ([]State, []State, error) {
	if _, err := os.Stat(StateDir()); os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err := checkStateDir(StateDir()); err != nil {
		return nil, nil, err
	}
	files, _ := filepath.Glob(filepath.Join(StateDir(), "connect-"+NetNS()+"-*.json"))
	var cleaned, running []State
	for _, p := range files {
		f, err := openState(p, os.O_RDWR)
		if err != nil {
			continue
		}
		st := readState(f)
		if tryLock(f) != nil {
			running = append(running, st)
			f.Close()
			continue
		}
		if !dryRun {
			if err := Undo(&st, admin); err != nil {
				f.Close()
				return cleaned, running, err
			}
			os.Remove(p)
		}
		f.Close()
		cleaned = append(cleaned, st)
	}
	return cleaned, running, nil
}

// Running returns the state of the connect to server that runs on this machine, in this
// network namespace and as this user (the same state directory), if one does: kubectl kt
// run uses it instead of starting another.
func Running(server string) (*State, bool) {
	f, err := openState(statePath(server), os.O_RDONLY)
	if err != nil {
		return nil, false
	}
	defer f.Close() // and with it the lock, if this took it
	if tryLock(f) == nil {
		return nil, false
	}
	st := readState(f)
	return &st, true
}
