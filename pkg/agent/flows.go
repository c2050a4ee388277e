package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kubectl-kt/kt/pkg/mux"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// Flows serves the client's TCP flows: mux sessions on wire.MuxPort whose streams each carry a
// SOCKS5 CONNECT, and the streams of their own that large downloads and uploads move to on
// wire.MovePort (see pkg/wire/flows.go).
type Flows struct {
	dialTimeout time.Duration

	mu    sync.Mutex
	moves map[wire.MoveRequest]chan net.Conn // the flows that can move, by session and stream
}

// NewFlows returns a Flows that dials with a 10 s timeout.
func NewFlows() *Flows {
	return &Flows{dialTimeout: 10 * time.Second, moves: map[wire.MoveRequest]chan net.Conn{}}
}

// ServeSession runs one mux session on c until it ends.
func (f *Flows) ServeSession(c net.Conn) {
	defer c.Close()
	var token [wire.TokenLen]byte
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, token[:]); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	s := mux.Server(c)
	defer s.Close()
	for {
		st, err := s.Accept()
		if err != nil {
			return
		}
		go f.serveFlow(token, st)
	}
}

// ServeMove hands a flow's own stream to the flow it names, or closes it.
func (f *Flows) ServeMove(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := wire.ReadMoveRequest(c)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	ch := f.moves[req]
	f.mu.Unlock()
	select {
	case ch <- c: // a nil ch (no such flow) is never ready
	default:
		c.Close() // no such flow, or asked twice
	}
}

// serveFlow answers the stream's SOCKS5 CONNECT and relays it.
func (f *Flows) serveFlow(token [wire.TokenLen]byte, st *mux.Stream) {
	defer st.Close()
	// The flow can move from the moment the client has the CONNECT reply: an upload may ask
	// before this goroutine gets past connect, so the flow is listed before it answers.
	key := wire.MoveRequest{Token: token, Stream: st.ID()}
	move := make(chan net.Conn, 1)
	f.mu.Lock()
	f.moves[key] = move
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.moves, key)
		f.mu.Unlock()
		select {
		case c := <-move:
			c.Close()
		default:
		}
	}()
	target, err := f.connect(st)
	if err != nil {
		return
	}
	defer target.Close()

	up := make(chan struct{})
	own := make(chan net.Conn, 1) // the flow's own stream, once download has read the go-ahead
	failed := make(chan struct{})
	var upOwn net.Conn // own, if the upload took it; closed once both directions are done
	go func() {
		defer close(up)
		_, err := io.Copy(target, st)
		if errors.Is(err, mux.ErrMoved) {
			// The client sends the rest on the flow's own stream, after the go-ahead.
			select {
			case upOwn = <-own:
				_, err = io.Copy(target, upOwn)
			case <-failed:
				return
			}
		}
		if err == nil {
			target.CloseWrite()
		}
	}()
	if download(st, target, move, own) != nil {
		close(failed) // download closed own, if it got that far; the deferred closes end the rest
		return
	}
	<-up // wait for the client's end
	if upOwn != nil {
		upOwn.Close()
	}
	select {
	case c := <-own: // moved, and the upload ended on the mux stream
		c.Close()
	default:
	}
}

// download copies the target's data to the client: on the mux stream, until the client sends a
// stream of the flow's own, then there, where the kernel splices it. It hands that stream to
// the upload through own once the client's go-ahead is read from it.
func download(st *mux.Stream, target *net.TCPConn, move <-chan net.Conn, own chan<- net.Conn) error {
	// A move must not wait for the target to send: an upload's target may send nothing until
	// it is over. The read in progress is cut short with a deadline in the past, set before the
	// stream is handed on, so that the loop below clears it after the last time it is set.
	moved := make(chan net.Conn, 1)
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case c := <-move:
			target.SetReadDeadline(time.Unix(1, 0))
			moved <- c
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-watched
		select {
		case c := <-moved: // came as the download ended
			c.Close()
		default:
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		select {
		case c := <-moved:
			return moveDownload(st, target, c, own)
		default:
		}
		n, err := target.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return moveDownload(st, target, <-moved, own)
		}
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return st.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}

// moveDownload ends the download on the mux stream and sends the rest on c. On success c
// stays open for the upload; serveFlow closes it when both directions are done.
func moveDownload(st *mux.Stream, target *net.TCPConn, c net.Conn, own chan<- net.Conn) (err error) {
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	target.SetReadDeadline(time.Time{})
	if err := st.Move(wire.MoveTakesUploads); err != nil {
		return err
	}
	// Nothing goes on the new stream before the client read the mux stream to its end and
	// says so: the port-forward connection would hold the new stream's data, and the mux
	// stream's behind it, until someone read it.
	var goByte [1]byte
	if _, err := io.ReadFull(c, goByte[:]); err != nil {
		return err
	}
	own <- c
	if _, err := io.Copy(c, target); err != nil {
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	c.Close() // no half-close: the end of the download ends the stream
	return nil
}

// SOCKS5 reply codes.
const (
	socksOK          = 0
	socksFailure     = 1
	socksNetUnreach  = 3
	socksHostUnreach = 4
	socksRefused     = 5
	socksNoCommand   = 7
	socksNoAddrType  = 8
)

// connect reads a SOCKS5 greeting and CONNECT request, dials, and answers both in one write.
func (f *Flows) connect(st *mux.Stream) (*net.TCPConn, error) {
	reply := func(code byte) []byte {
		return []byte{5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0}
	}
	addr, code, err := readConnect(st)
	if err != nil {
		if code != 0 {
			st.Write(reply(code))
		}
		return nil, err
	}
	c, err := net.DialTimeout("tcp", addr, f.dialTimeout)
	if err != nil {
		st.Write(reply(dialErrorCode(err)))
		return nil, err
	}
	tc := c.(*net.TCPConn)
	r := reply(socksOK)
	if la, ok := tc.LocalAddr().(*net.TCPAddr); ok {
		if ip4 := la.IP.To4(); ip4 != nil {
			copy(r[6:10], ip4)
		}
		binary.BigEndian.PutUint16(r[10:12], uint16(la.Port))
	}
	if _, err := st.Write(r); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// readConnect reads a stream's SOCKS5 greeting and CONNECT request (sent together) and
// returns the destination, or the reply code to refuse it with (0: just close).
func readConnect(r io.Reader) (addr string, code byte, err error) {
	var b [262]byte
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return "", 0, err
	}
	if b[0] != 5 {
		return "", 0, fmt.Errorf("socks version %d", b[0])
	}
	if _, err := io.ReadFull(r, b[:b[1]]); err != nil { // the methods: kt offers "none"
		return "", 0, err
	}
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return "", 0, err
	}
	if b[1] != 1 {
		return "", socksNoCommand, errors.New("socks: only CONNECT")
	}
	var host string
	switch b[3] {
	case 1:
		if _, err := io.ReadFull(r, b[:4]); err != nil {
			return "", 0, err
		}
		host = net.IP(b[:4]).String()
	case 4:
		if _, err := io.ReadFull(r, b[:16]); err != nil {
			return "", 0, err
		}
		host = net.IP(b[:16]).String()
	case 3:
		if _, err := io.ReadFull(r, b[:1]); err != nil {
			return "", 0, err
		}
		n := int(b[0])
		if _, err := io.ReadFull(r, b[:n]); err != nil {
			return "", 0, err
		}
		host = string(b[:n])
		if !validDomain(host) {
			return "", socksHostUnreach, fmt.Errorf("socks: bad domain name %q", host)
		}
	default:
		return "", socksNoAddrType, errors.New("socks: address type")
	}
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return "", 0, err
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(b[:2])))), 0, nil
}

// validDomain reports whether a SOCKS5 domain address is a host name (letters, digits, '-', '_'
// and dots) or a plain IPv4 address; anything else, a ':' or ']' that would make the joined
// address mean another host and port included, is refused before it is dialled.
func validDomain(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func dialErrorCode(err error) byte {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socksRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socksNetUnreach
	case errors.Is(err, syscall.EHOSTUNREACH):
		return socksHostUnreach
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return socksHostUnreach
	}
	return socksFailure
}
