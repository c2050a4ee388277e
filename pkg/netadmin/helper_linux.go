package netadmin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/tun"
)

// The helper and the user's process speak over a SOCK_SEQPACKET Unix socket: one JSON request,
// one JSON response per message, with file descriptors (the TUN device, the DNS sockets) passed
// alongside the response.
type request struct {
	Op      string          `json:"op"`
	Name    string          `json:"name,omitempty"`
	MTU     int             `json:"mtu,omitempty"`
	Routes  []netip.Prefix  `json:"routes,omitempty"`
	Addr    string          `json:"addr,omitempty"`
	Path    string          `json:"path,omitempty"`
	Server  string          `json:"server,omitempty"`
	Search  []string        `json:"search,omitempty"`
	PID     int             `json:"pid,omitempty"`
	Orig    []byte          `json:"orig,omitempty"`
	Entries []dns.HostEntry `json:"entries,omitempty"`
	NSs     []string        `json:"namespaces,omitempty"`
}

type response struct {
	Err  string `json:"err,omitempty"`
	Name string `json:"name,omitempty"`
	Orig []byte `json:"orig,omitempty"`
}

const maxMessage = 1 << 20

// Helper is the user's end of the sudo'd helper.
type Helper struct {
	mu   sync.Mutex
	conn *net.UnixConn
	cmd  *exec.Cmd
	done chan error
}

// StartHelper runs the helper through sudo and waits until it is connected.
func StartHelper(opts HelperOptions) (*Helper, error) {
	if err := CheckPaths(opts.Paths...); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	const sudo = "sudo"
	sudoPath, err := exec.LookPath(sudo)
	if err != nil {
		return nil, fmt.Errorf("connect needs root for its TUN device, routes and DNS, and %q was not found: run it as root, install sudo, or use --disable-tun for a SOCKS5 proxy", sudo)
	}
	dir, err := os.MkdirTemp("", "kubectl-kt-helper-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	cmd := exec.Command(sudoPath, "--", exe, HelperCommand, "--socket", sock, "--uid", strconv.Itoa(os.Getuid()))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", sudo, err)
	}
	h := &Helper{cmd: cmd, done: make(chan error, 1)}
	go func() { h.done <- cmd.Wait() }()
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		if c, err := l.AcceptUnix(); err == nil {
			accepted <- c
		}
	}()
	select {
	case c := <-accepted:
		h.conn = c
		return h, nil
	case err := <-h.done:
		return nil, fmt.Errorf("%s %s did not start (%v): connect needs root for its TUN device, routes and DNS; allow it in sudoers, run it as root, or use --disable-tun", sudo, HelperCommand, err)
	case <-time.After(5 * time.Minute): // long enough to type a password
		return nil, fmt.Errorf("the helper started through %s did not connect within 5 minutes", sudo)
	}
}

func (h *Helper) call(req request, nfd int) (response, []*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return response{}, nil, err
	}
	if len(b) > maxMessage {
		return response{}, nil, fmt.Errorf("%s: request of %d bytes is too large for the helper", req.Op, len(b))
	}
	if _, err := h.conn.Write(b); err != nil {
		return response{}, nil, fmt.Errorf("privileged helper: %w", err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := h.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return response{}, nil, fmt.Errorf("privileged helper: %w", err)
	}
	if n == 0 {
		return response{}, nil, fmt.Errorf("privileged helper: it exited")
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return response{}, nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				return response{}, nil, err
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), req.Op))
			}
		}
	}
	var resp response
	if err := json.Unmarshal(buf[:n], &resp); err != nil {
		closeAll(files)
		return response{}, nil, err
	}
	if resp.Err != "" {
		closeAll(files)
		return resp, nil, errors.New(resp.Err)
	}
	if len(files) != nfd {
		closeAll(files)
		return resp, nil, fmt.Errorf("privileged helper: %s sent %d file descriptors, want %d", req.Op, len(files), nfd)
	}
	return resp, files, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func (h *Helper) CreateTUN(name string, mtu int) (*tun.Device, error) {
	_, files, err := h.call(request{Op: "create-tun", Name: name, MTU: mtu}, 1)
	if err != nil {
		return nil, err
	}
	return tun.FromFile(files[0])
}

func (h *Helper) AddRoutes(dev string, routes []netip.Prefix) error {
	_, _, err := h.call(request{Op: "add-routes", Name: dev, Routes: routes}, 0)
	return err
}

func (h *Helper) RemoveTUN(name string) error {
	_, _, err := h.call(request{Op: "remove-tun", Name: name}, 0)
	return err
}

func (h *Helper) ListenDNS(addr string) (net.PacketConn, net.Listener, error) {
	_, files, err := h.call(request{Op: "listen-dns", Addr: addr}, 2)
	if err != nil {
		return nil, nil, err
	}
	defer closeAll(files) // net.File* duplicate them
	pc, err := net.FilePacketConn(files[0])
	if err != nil {
		return nil, nil, err
	}
	l, err := net.FileListener(files[1])
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc, l, nil
}

func (h *Helper) ApplyResolvConf(path, server string, search []string, pid int) ([]byte, error) {
	resp, _, err := h.call(request{Op: "apply-resolv", Path: path, Server: server, Search: search, PID: pid}, 0)
	return resp.Orig, err
}

func (h *Helper) RestoreResolvConf(path string, orig []byte) error {
	_, _, err := h.call(request{Op: "restore-resolv", Path: path, Orig: orig}, 0)
	return err
}

func (h *Helper) WriteHostsBlock(path string, entries []dns.HostEntry) error {
	_, _, err := h.call(request{Op: "write-hosts", Path: path, Entries: entries}, 0)
	return err
}

func (h *Helper) SetLinkDNS(link, server string, search, namespaces []string) error {
	_, _, err := h.call(request{Op: "link-dns", Name: link, Server: server, Search: search, NSs: namespaces}, 0)
	return err
}

func (h *Helper) RemoveHostsBlock(path string) error {
	_, _, err := h.call(request{Op: "remove-hosts", Path: path}, 0)
	return err
}

// Close ends the helper: it undoes whatever is still applied and exits.
func (h *Helper) Close() error {
	h.mu.Lock()
	h.conn.Close()
	h.mu.Unlock()
	select {
	case err := <-h.done:
		if err != nil {
			return fmt.Errorf("privileged helper: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("privileged helper did not exit")
	}
}

// ServeHelper is the helper's side, run as root: it connects to the user's socket, makes the
// changes asked for, and when the user's process goes away undoes what is still applied.
func ServeHelper(sock string, uid int, errOut io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s must run as root (kubectl kt starts it through sudo)", HelperCommand)
	}
	if s := os.Getenv("SUDO_UID"); s != "" && s != strconv.Itoa(uid) {
		return fmt.Errorf("--uid %d is not the user who ran sudo (%s)", uid, s)
	}
	// The terminal's Ctrl-C reaches this process too: the user's process asks for the undo,
	// and the socket's end tells when it is gone.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		return err
	}
	defer conn.Close()
	var cred *unix.Ucred
	sc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	sc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil {
		return err
	}
	if int(cred.Uid) != uid {
		return fmt.Errorf("the socket %s belongs to uid %d, not %d", sock, cred.Uid, uid)
	}
	s := &server{resolv: map[string][]byte{}, hosts: map[string]bool{}, tuns: map[string]bool{}}
	defer s.undo(errOut)
	buf := make([]byte, maxMessage)
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			return nil // the user's process is gone
		}
		var req request
		var resp response
		var files []*os.File
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			resp.Err = err.Error()
		} else {
			resp, files, err = s.handle(req)
			if err != nil {
				resp.Err = err.Error()
			}
		}
		b, _ := json.Marshal(resp)
		var oob []byte
		if len(files) > 0 {
			fds := make([]int, len(files))
			for i, f := range files {
				fds[i] = int(f.Fd())
			}
			oob = unix.UnixRights(fds...)
		}
		_, _, err = conn.WriteMsgUnix(b, oob, nil)
		closeAll(files) // the user's process holds its own copies now
		if err != nil {
			return nil
		}
	}
}

type server struct {
	resolv map[string][]byte // resolv.conf files edited, with their original content
	hosts  map[string]bool   // hosts files holding kt's block
	tuns   map[string]bool   // TUN devices it made
}

func (s *server) allowed(path string) error {
	if path == "" {
		return fmt.Errorf("no file named")
	}
	return CheckPaths(path)
}

// validName is a DNS name or an interface name: no spaces, no line breaks, nothing else to
// smuggle into a file.
func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == '%') {
			return false
		}
	}
	return true
}

func (s *server) handle(req request) (response, []*os.File, error) {
	var d Direct
	switch req.Op {
	case "create-tun":
		if !validName(req.Name) || len(req.Name) > 15 {
			return response{}, nil, fmt.Errorf("bad interface name %q", req.Name)
		}
		dev, err := d.CreateTUN(req.Name, req.MTU)
		if err != nil {
			return response{}, nil, err
		}
		// The device lives as long as any copy of its file is open: the user's process holds
		// one, so the device, and its routes, go away with that process.
		file := dev.File()
		dup, err := unix.Dup(int(file.Fd()))
		dev.Close()
		if err != nil {
			return response{}, nil, err
		}
		s.tuns[dev.Name()] = true
		return response{Name: dev.Name()}, []*os.File{os.NewFile(uintptr(dup), "tun")}, nil
	case "add-routes":
		if !s.tuns[req.Name] {
			return response{}, nil, fmt.Errorf("routes go only into the TUN device this helper made, not %q", req.Name)
		}
		return response{}, nil, d.AddRoutes(req.Name, req.Routes)
	case "remove-tun":
		// A crashed connect's device: a TUN device named like kt's.
		if l, err := netlink.LinkByName(req.Name); err != nil || l.Type() != "tuntap" || !strings.HasPrefix(req.Name, "kt") {
			return response{}, nil, fmt.Errorf("%q is not a TUN device of kt's", req.Name)
		}
		return response{}, nil, d.RemoveTUN(req.Name)
	case "listen-dns":
		if ap, err := netip.ParseAddrPort(req.Addr); err != nil || !ap.Addr().IsLoopback() {
			return response{}, nil, fmt.Errorf("the local DNS server listens only on a loopback address, not %q", req.Addr)
		}
		pc, l, err := d.ListenDNS(req.Addr)
		if err != nil {
			return response{}, nil, err
		}
		defer pc.Close()
		defer l.Close()
		pf, err := pc.(*net.UDPConn).File()
		if err != nil {
			return response{}, nil, err
		}
		lf, err := l.(*net.TCPListener).File()
		if err != nil {
			pf.Close()
			return response{}, nil, err
		}
		return response{}, []*os.File{pf, lf}, nil
	case "apply-resolv":
		if err := s.allowed(req.Path); err != nil {
			return response{}, nil, err
		}
		if _, err := netip.ParseAddr(req.Server); err != nil {
			return response{}, nil, fmt.Errorf("bad DNS server address %q", req.Server)
		}
		for _, n := range req.Search {
			if !validName(n) {
				return response{}, nil, fmt.Errorf("bad search domain %q", n)
			}
		}
		orig, err := d.ApplyResolvConf(req.Path, req.Server, req.Search, req.PID)
		if err != nil {
			return response{}, nil, err
		}
		s.resolv[req.Path] = orig
		return response{Orig: orig}, nil, nil
	case "restore-resolv":
		if err := s.allowed(req.Path); err != nil {
			return response{}, nil, err
		}
		delete(s.resolv, req.Path)
		return response{}, nil, d.RestoreResolvConf(req.Path, req.Orig)
	case "write-hosts":
		if err := s.allowed(req.Path); err != nil {
			return response{}, nil, err
		}
		for _, e := range req.Entries {
			if _, err := netip.ParseAddr(e.IP); err != nil {
				return response{}, nil, fmt.Errorf("bad address %q in hosts entries", e.IP)
			}
			for _, n := range e.Names {
				if !validName(n) {
					return response{}, nil, fmt.Errorf("bad name %q in hosts entries", n)
				}
			}
		}
		s.hosts[req.Path] = true
		return response{}, nil, d.WriteHostsBlock(req.Path, req.Entries)
	case "link-dns":
		if !s.tuns[req.Name] {
			return response{}, nil, fmt.Errorf("per-link DNS goes only on the TUN device this helper made, not %q", req.Name)
		}
		if ap, err := netip.ParseAddr(req.Server); err != nil || !ap.IsLoopback() {
			return response{}, nil, fmt.Errorf("the DNS server of the link must be a loopback address, not %q", req.Server)
		}
		for _, n := range append(append([]string{}, req.Search...), req.NSs...) {
			if !validName(n) {
				return response{}, nil, fmt.Errorf("bad domain %q", n)
			}
		}
		return response{}, nil, d.SetLinkDNS(req.Name, req.Server, req.Search, req.NSs)
	case "remove-hosts":
		if err := s.allowed(req.Path); err != nil {
			return response{}, nil, err
		}
		delete(s.hosts, req.Path)
		return response{}, nil, d.RemoveHostsBlock(req.Path)
	}
	return response{}, nil, fmt.Errorf("unknown request %q", req.Op)
}

// undo restores what the user's process did not: it was killed, or lost its connection.
func (s *server) undo(errOut io.Writer) {
	var d Direct
	for p, orig := range s.resolv {
		if err := d.RestoreResolvConf(p, orig); err != nil {
			fmt.Fprintf(errOut, "kubectl-kt helper: restore %s: %v\n", p, err)
		}
	}
	for p := range s.hosts {
		if err := d.RemoveHostsBlock(p); err != nil {
			fmt.Fprintf(errOut, "kubectl-kt helper: clean %s: %v\n", p, err)
		}
	}
}
