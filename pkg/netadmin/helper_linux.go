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
	sock, _ := filepath.Abs(filepath.Join(dir, "sock")) // the helper takes only an absolute path
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

func (h *Helper) RestoreResolvConf(path string) error {
	_, _, err := h.call(request{Op: "restore-resolv", Path: path}, 0)
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
	sanitizeEnv()
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
	s := newServer(uid)
	defer s.undo(errOut)
	buf := make([]byte, maxMessage)
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			return nil // the user's process is gone
		}
		var resp response
		var files []*os.File
		if req, err := decodeRequest(buf[:n]); err != nil {
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

// securePath is where the helper looks for the programs it runs (sudo's usual secure_path):
// never the caller's PATH, which sudoers may pass through.
const securePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// sanitizeEnv leaves the helper, and every program it runs, only a fixed PATH and locale:
// nothing of the caller's environment (PATH, LD_*, locale or D-Bus variables) reaches them.
func sanitizeEnv() {
	os.Clearenv()
	os.Setenv("PATH", securePath)
	os.Setenv("LC_ALL", "C")
}

type server struct {
	uid    int             // the user the helper works for
	resolv map[string]bool // resolv.conf files it edited
	hosts  map[string]bool // hosts files holding kt's block
	tuns   map[string]bool // TUN devices it made
	routes int             // routes it added
	// taken lists this machine's own addresses and networks (the routes of devices other
	// than the helper's own, default routes aside); allowed, the ranges it may route.
	taken   func(own map[string]bool) ([]netip.Prefix, error)
	allowed func() []netip.Prefix
}

func newServer(uid int) *server {
	return &server{uid: uid, resolv: map[string]bool{}, hosts: map[string]bool{}, tuns: map[string]bool{}, taken: machineNets, allowed: allowedRanges}
}

// The files each op may edit.
const (
	resolvPath = "/etc/resolv.conf"
	hostsPath  = "/etc/hosts"
)

func only(path, want string) error {
	if path != want {
		return fmt.Errorf("this request edits only %s, not %q", want, path)
	}
	return nil
}

// machineNets are the addresses of this machine and the networks its devices are on (link-
// scope routes), less own's: connect's routes must capture nobody else's traffic there.
func machineNets(own map[string]bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if own[l.Attrs().Name] {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			}
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Scope != netlink.SCOPE_LINK {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			if ip, ok := netip.AddrFromSlice(r.Dst.IP); ok && ones > 0 {
				out = append(out, netip.PrefixFrom(ip.Unmap(), ones).Masked())
			}
		}
	}
	return out, nil
}

// allowedRanges are clusterRanges and what RouteAllowFile adds, if root owns it and nobody
// else may write it.
func allowedRanges() []netip.Prefix {
	out := append([]netip.Prefix{}, clusterRanges...)
	f, err := os.Open(RouteAllowFile)
	if err != nil {
		return out
	}
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Uid != 0 || st.Mode&0o022 != 0 {
		return out
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	for _, l := range strings.Split(string(b), "\n") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(l)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func (s *server) handle(req request) (response, []*os.File, error) {
	var d Direct
	switch req.Op {
	case "create-tun":
		return s.createTUN(req)
	case "add-routes":
		return s.addRoutes(req)
	case "remove-tun":
		return s.removeTUN(req)
	case "listen-dns":
		return s.listenDNS(req)
	case "apply-resolv":
		if err := only(req.Path, resolvPath); err != nil {
			return response{}, nil, err
		}
		if req.Server == "" {
			return response{}, nil, fmt.Errorf("no DNS server address")
		}
		orig, err := d.ApplyResolvConf(req.Path, req.Server, req.Search, req.PID)
		if err != nil {
			return response{}, nil, err
		}
		s.resolv[req.Path] = true
		return response{Orig: orig}, nil, nil
	case "restore-resolv":
		if err := only(req.Path, resolvPath); err != nil {
			return response{}, nil, err
		}
		delete(s.resolv, req.Path)
		return response{}, nil, d.RestoreResolvConf(req.Path)
	case "write-hosts":
		if err := only(req.Path, hostsPath); err != nil {
			return response{}, nil, err
		}
		s.hosts[req.Path] = true
		return response{}, nil, d.WriteHostsBlock(req.Path, req.Entries)
	case "link-dns":
		if !s.tuns[req.Name] {
			return response{}, nil, fmt.Errorf("per-link DNS goes only on the TUN device this helper made, not %q", req.Name)
		}
		if req.Server == "" {
			return response{}, nil, fmt.Errorf("no DNS server address")
		}
		return response{}, nil, d.SetLinkDNS(req.Name, req.Server, req.Search, req.NSs)
	case "remove-hosts":
		if err := only(req.Path, hostsPath); err != nil {
			return response{}, nil, err
		}
		delete(s.hosts, req.Path)
		return response{}, nil, d.RemoveHostsBlock(req.Path)
	}
	return response{}, nil, fmt.Errorf("unknown request %q", req.Op)
}

// createTUN makes a TUN device named kt… and hands the user a copy of its file.
func (s *server) createTUN(req request) (response, []*os.File, error) {
	var d Direct
	if !strings.HasPrefix(req.Name, "kt") {
		return response{}, nil, fmt.Errorf("the helper makes only TUN devices named kt…, not %q (--tun-name)", req.Name)
	}
	dev, err := d.CreateTUN(req.Name, req.MTU)
	if err != nil {
		return response{}, nil, err
	}
	// The device lives as long as any copy of its file is open: the user's process holds
	// one, so the device, and its routes, go away with that process. It is the user's
	// (TUNSETOWNER), so that remove-tun can tell whose a leftover device is.
	file := dev.File()
	if err := unix.IoctlSetInt(int(file.Fd()), unix.TUNSETOWNER, s.uid); err != nil {
		dev.Close()
		return response{}, nil, fmt.Errorf("set the owner of %s: %w", dev.Name(), err)
	}
	dup, err := unix.Dup(int(file.Fd()))
	dev.Close()
	if err != nil {
		return response{}, nil, err
	}
	s.tuns[dev.Name()] = true
	return response{Name: dev.Name()}, []*os.File{os.NewFile(uintptr(dup), "tun")}, nil
}

// addRoutes routes req.Routes into the helper's own TUN device, within the allowed ranges
// and the limit, and never over a route this machine already has.
func (s *server) addRoutes(req request) (response, []*os.File, error) {
	var d Direct
	if !s.tuns[req.Name] {
		return response{}, nil, fmt.Errorf("routes go only into the TUN device this helper made, not %q", req.Name)
	}
	if s.routes+len(req.Routes) > maxRoutes {
		return response{}, nil, fmt.Errorf("at most %d routes in all", maxRoutes)
	}
	taken, err := s.taken(s.tuns)
	if err != nil {
		return response{}, nil, fmt.Errorf("read this machine's routes: %w", err)
	}
	allowed := s.allowed()
	for _, p := range req.Routes {
		if err := checkRoute(p, allowed, taken); err != nil {
			return response{}, nil, err
		}
	}
	s.routes += len(req.Routes)
	return response{}, nil, d.AddRoutes(req.Name, req.Routes)
}

// removeTUN removes a crashed connect's device: a TUN device named like kt's, and the
// user's own.
func (s *server) removeTUN(req request) (response, []*os.File, error) {
	var d Direct
	l, err := netlink.LinkByName(req.Name)
	if err != nil || l.Type() != "tuntap" || !strings.HasPrefix(req.Name, "kt") {
		return response{}, nil, fmt.Errorf("%q is not a TUN device of kt's", req.Name)
	}
	if t, ok := l.(*netlink.Tuntap); !ok || int64(t.Owner) != int64(s.uid) {
		return response{}, nil, fmt.Errorf("TUN device %q is not yours: the helper removes only devices it made for you", req.Name)
	}
	return response{}, nil, d.RemoveTUN(req.Name)
}

// listenDNS opens port 53 on a loopback address for the local DNS server and hands the user
// the sockets.
func (s *server) listenDNS(req request) (response, []*os.File, error) {
	var d Direct
	ap, err := netip.ParseAddrPort(req.Addr)
	if err != nil || ap.Addr().Zone() != "" || !ap.Addr().IsLoopback() {
		return response{}, nil, fmt.Errorf("the local DNS server listens only on a loopback address, not %q", req.Addr)
	}
	if ap.Port() != 53 {
		return response{}, nil, fmt.Errorf("the helper opens only port 53 for the local DNS server, not %d (a port above 1023 needs no helper)", ap.Port())
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
}

// undo restores what the user's process did not: it was killed, or lost its connection.
func (s *server) undo(errOut io.Writer) {
	var d Direct
	for p := range s.resolv {
		if err := d.RestoreResolvConf(p); err != nil {
			fmt.Fprintf(errOut, "kubectl-kt helper: restore %s: %v\n", p, err)
		}
	}
	for p := range s.hosts {
		if err := d.RemoveHostsBlock(p); err != nil {
			fmt.Fprintf(errOut, "kubectl-kt helper: clean %s: %v\n", p, err)
		}
	}
}
