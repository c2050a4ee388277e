// Command testapp is the e2e tests' workload: an HTTP server (echo, sized downloads, an upload
// sink, streaming, WebSocket echo), a UDP echo server, and a sleeper that client pods run as
// PID 1.
//
//	testapp serve [-http :8080[,:8081]] [-udp :9090] [-name NAME]   (HTTP and HTTPS on each port)
//	testapp get [-H 'NAME: VALUE'] URL   (prints "tls=BOOL " and the body; certificates unchecked)
//	testapp wsclient HOST:PORT [-H=NAME:VALUE]... MESSAGE...   (prints each echoed message)
//	testapp load -url URL [-n N] [-c C] [-newconn] [-rate R] [-upload BYTES] [-H 'NAME: VALUE'] [-slow D]
//	   (prints one JSON line; each failed request, and each slower than D, with its time on stderr)
//	testapp dig [-server HOST:PORT] NAME...   (a JSON line per name: rcode, answers, ms)
//	testapp relay -listen :8080 -to HOST:PORT   (a plain TCP relay, for benchmarks)
//	testapp record [-http 127.0.0.1:8080]   (prints a JSON line per request it gets)
//	testapp grpc-serve [-addr :9000] -name NAME   (gRPC health and reflection)
//	testapp grpc-check -addr HOST:PORT -service NAME [-md K=V]   (unary Check, streaming Watch)
//	testapp grpc-stream -addr HOST:PORT [-n 3] [-gap 2s]   (messages on one bidirectional stream)
//	testapp registry [-listen 127.0.0.1:5111]   (an OCI registry in memory; a line per request)
//	testapp sleep
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: testapp serve|sleep [flags]")
	}
	go reap()
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "wsclient":
		if err := wsClient(os.Args[2], os.Args[3:]); err != nil {
			log.Fatal(err)
		}
	case "grpc-serve":
		grpcServe(os.Args[2:])
	case "grpc-check":
		grpcCheck(os.Args[2:])
	case "grpc-stream":
		grpcStream(os.Args[2:])
	case "load":
		load(os.Args[2:])
	case "get":
		get(os.Args[2:])
	case "dig":
		dig(os.Args[2:])
	case "relay":
		relay(os.Args[2:])
	case "record":
		record(os.Args[2:])
	case "sink":
		sink(os.Args[2:])
	case "steal":
		if err := steal(os.Args[2], os.Args[3]); err != nil {
			log.Fatal(err)
		}
	case "tcpsend":
		if err := tcpSend(os.Args[2], strings.Join(os.Args[3:], " ")); err != nil {
			log.Fatal(err)
		}
	case "registry":
		serveRegistry(os.Args[2:])
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-ctx.Done()
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	httpAddr := fs.String("http", ":8080", "HTTP listen address (several comma-separated)")
	udpAddr := fs.String("udp", ":9090", "UDP echo address; empty disables")
	name := fs.String("name", "", "name reported in replies (default: hostname)")
	fs.Parse(args)
	if *name == "" {
		*name, _ = os.Hostname()
	}
	h := handler(*name)
	tlsCfg := selfSigned()
	for _, a := range strings.Split(*httpAddr, ",") {
		l, err := net.Listen("tcp", a)
		if err != nil {
			log.Fatal(err)
		}
		go func() { log.Fatal(http.Serve(sniffListener{l, tlsCfg}, h)) }()
		log.Printf("testapp %s: http and https on %s", *name, a)
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("testapp %s: udp echo on %s", *name, *udpAddr)
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("udp-echo "+*name+": "), buf[:n]...), from)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Pattern returns the deterministic content of /bytes: byte i of a download is Pattern(i).
func Pattern(i int64) byte { return byte((i*7 + i/251) % 256) }

func handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want ?n=<bytes>", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		buf := make([]byte, 64*1024)
		for off := int64(0); off < n; {
			m := min(int64(len(buf)), n-off)
			for i := int64(0); i < m; i++ {
				buf[i] = Pattern(off + i)
			}
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			off += m
		}
	})
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		// an upload: the body is read and dropped; the reply is its length, and with ?sum=1
		// its SHA-256
		var dst io.Writer = io.Discard
		h := sha256.New()
		if r.URL.Query().Get("sum") == "1" {
			dst = h
		}
		n, err := io.Copy(dst, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if dst == h {
			fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if n <= 0 {
			n = 5
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl, _ := w.(http.Flusher)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: event %d from %s\n\n", i, name)
			if fl != nil {
				fl.Flush()
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { wsEcho(w, r, name) })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) { // the process's environment
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		json.NewEncoder(w).Encode(env)
	})
	mux.HandleFunc("/port", func(w http.ResponseWriter, r *http.Request) { // the port the request came to
		a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if a, ok := a.(*net.TCPAddr); ok {
			fmt.Fprintf(w, "port %d of %s\n", a.Port, name)
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(d)
		fmt.Fprintf(w, "slow %s from %s\n", d, name)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "echo from %s: POST %s %d bytes: %s\n", name, r.URL.Path, len(b), b)
			return
		}
		var hs []string
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-") || strings.EqualFold(k, "version") {
				hs = append(hs, k+"="+r.Header.Get(k))
			}
		}
		sort.Strings(hs)
		fmt.Fprintf(w, "echo from %s: %s %s from %s %s\n", name, r.Method, r.URL.Path, r.RemoteAddr, strings.Join(hs, " "))
	})
	return mux
}

// wsEcho is a minimal RFC 6455 echo server for text and binary frames (no extensions).
func wsEcho(w http.ResponseWriter, r *http.Request, name string) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "websocket only", http.StatusBadRequest)
		return
	}
	conn, rw, err := acceptWS(w, r)
	if err != nil {
		return
	}
	defer conn.Close()
	for {
		op, payload, err := readWSFrame(rw.Reader)
		if err != nil {
			return
		}
		if op == 8 { // close
			rw.Write([]byte{0x88, 0})
			rw.Flush()
			return
		}
		if op == 9 { // ping
			op = 10
		}
		out := payload
		if op == 1 {
			out = append([]byte("ws-echo "+name+": "), payload...)
		}
		frame := []byte{0x80 | op}
		switch {
		case len(out) < 126:
			frame = append(frame, byte(len(out)))
		case len(out) < 65536:
			frame = append(frame, 126, byte(len(out)>>8), byte(len(out)))
		default:
			frame = append(frame, 127, 0, 0, 0, 0, byte(len(out)>>24), byte(len(out)>>16), byte(len(out)>>8), byte(len(out)))
		}
		rw.Write(append(frame, out...))
		rw.Flush()
	}
}

// acceptWS takes over the connection of a WebSocket upgrade request and answers 101.
func acceptWS(w http.ResponseWriter, r *http.Request) (net.Conn, *bufio.ReadWriter, error) {
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
	if err := rw.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, rw, nil
}

// readWSFrame reads one client frame and returns its opcode and unmasked payload.
func readWSFrame(r *bufio.Reader) (byte, []byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	op := hdr[0] & 0x0f
	n := int64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(r, b[:])
		n = int64(b[0])<<8 | int64(b[1])
	case 127:
		var b [8]byte
		io.ReadFull(r, b[:])
		n = 0
		for _, x := range b {
			n = n<<8 | int64(x)
		}
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	var mask [4]byte
	if hdr[1]&0x80 != 0 {
		io.ReadFull(r, mask[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return op, payload, nil
}

// wsClient opens a WebSocket to ws://hostport/ws, sends each message as a text frame and
// prints each reply.
func wsClient(hostport string, msgs []string) error {
	c, err := net.DialTimeout("tcp", hostport, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	extra := ""
	for len(msgs) > 0 && strings.HasPrefix(msgs[0], "-H=") { // extra request headers
		extra += strings.TrimPrefix(msgs[0], "-H=") + "\r\n"
		msgs = msgs[1:]
	}
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", hostport, extra)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, "101") {
		return fmt.Errorf("websocket upgrade: %q %v", status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == "\r\n" {
			break
		}
	}
	for _, m := range msgs {
		mask := []byte{1, 2, 3, 4}
		frame := []byte{0x81, 0x80 | byte(len(m))}
		frame = append(frame, mask...)
		for i := 0; i < len(m); i++ {
			frame = append(frame, m[i]^mask[i%4])
		}
		if _, err := c.Write(frame); err != nil {
			return err
		}
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		n := int(hdr[1] & 0x7f)
		if n == 126 {
			var b [2]byte
			io.ReadFull(br, b[:])
			n = int(b[0])<<8 | int(b[1])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return err
		}
		fmt.Println(string(payload))
		time.Sleep(200 * time.Millisecond)
	}
	c.Write([]byte{0x88, 0x80, 0, 0, 0, 0})
	return nil
}

// load sends n requests to url with c workers and prints latency percentiles and throughput
// as JSON. -newconn opens a new TCP connection for every request; -rate paces the requests
// (all workers together) so that latency is measured below saturation.
func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "URL")
	n := fs.Int("n", 200, "requests")
	c := fs.Int("c", 1, "concurrent workers")
	newConn := fs.Bool("newconn", false, "a new connection per request")
	rate := fs.Int("rate", 0, "requests per second, all workers together (0: as fast as they go)")
	upload := fs.Int64("upload", 0, "POST this many zero bytes with each request (to /sink) instead of a GET")
	header := fs.String("H", "", "a request header, 'NAME: VALUE'")
	slow := fs.Duration("slow", 0, "log each request that takes longer, with its time (0: none)")
	latencies := fs.Bool("latencies", false, "print every request's latency too, in µs (latencies_us), so that runs can be pooled")
	fs.Parse(args)
	tr := &http.Transport{DisableKeepAlives: *newConn, MaxIdleConnsPerHost: *c, DisableCompression: true}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	type res struct {
		d     time.Duration
		bytes int64
		err   error
	}
	jobs := make(chan int, *n)
	if *rate > 0 {
		go func() {
			t := time.NewTicker(time.Second / time.Duration(*rate))
			defer t.Stop()
			for i := 0; i < *n; i++ {
				<-t.C
				jobs <- i
			}
			close(jobs)
		}()
	} else {
		for i := 0; i < *n; i++ {
			jobs <- i
		}
		close(jobs)
	}
	results := make(chan res, *n)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				s := time.Now()
				var resp *http.Response
				var err error
				var req *http.Request
				if *upload > 0 {
					req, err = http.NewRequest(http.MethodPost, *url, io.LimitReader(zeros{}, *upload))
					if err == nil {
						req.Header.Set("Content-Type", "application/octet-stream")
					}
				} else {
					req, err = http.NewRequest(http.MethodGet, *url, nil)
				}
				if err == nil {
					setHeader(req, *header)
					resp, err = hc.Do(req)
				}
				var b int64
				if err == nil {
					var reply bytes.Buffer // the start of the body
					b, err = io.Copy(&reply, io.LimitReader(resp.Body, 1<<10))
					if err == nil {
						var rest int64
						rest, err = io.Copy(io.Discard, resp.Body)
						b += rest
					}
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					if err == nil && *upload > 0 {
						if got := strings.TrimSpace(reply.String()); got != strconv.FormatInt(*upload, 10) {
							err = fmt.Errorf("the server got %q bytes of %d", got, *upload)
						}
						b = *upload
					}
				}
				if err != nil { // when, for a test that fails to tell what happened then
					fmt.Fprintf(os.Stderr, "%s load: %v\n", time.Now().UTC().Format("15:04:05.000"), err)
				} else if d := time.Since(s); *slow > 0 && d > *slow {
					fmt.Fprintf(os.Stderr, "%s load: a request sent at %s took %s\n", time.Now().UTC().Format("15:04:05.000"), s.UTC().Format("15:04:05.000"), d.Round(time.Millisecond))
				}
				results <- res{time.Since(s), b, err}
			}
		}()
	}
	wg.Wait()
	total := time.Since(t0)
	close(results)
	var ds []time.Duration
	var bytes int64
	errs := 0
	var firstErr string
	for r := range results {
		if r.err != nil {
			errs++
			if firstErr == "" {
				firstErr = r.err.Error()
			}
			continue
		}
		ds = append(ds, r.d)
		bytes += r.bytes
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	pct := func(p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	var us []byte
	if *latencies {
		us = append(us, `,"latencies_us":[`...)
		for i, d := range ds {
			if i > 0 {
				us = append(us, ',')
			}
			us = strconv.AppendInt(us, d.Microseconds(), 10)
		}
		us = append(us, ']')
	}
	fmt.Printf(`{"n":%d,"errors":%d,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"seconds":%.3f,"mib_per_s":%.2f,"req_per_s":%.1f,"first_error":%q%s}`+"\n",
		len(ds), errs, pct(0.5), pct(0.99), pct(1), total.Seconds(), float64(bytes)/(1<<20)/total.Seconds(), float64(len(ds))/total.Seconds(), firstErr, us)
}

// relay copies each connection to -to and back, byte for byte, with nothing parsed: a hop
// through a pod in its plainest form, to set the mesh router's latency beside.
// -to is resolved once, as the router dials its origin by address.
func relay(args []string) {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	to := fs.String("to", "", "HOST:PORT to relay to")
	fs.Parse(args)
	addr, err := net.ResolveTCPAddr("tcp", *to)
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			u, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(u, c)
				u.CloseWrite()
				close(done)
			}()
			io.Copy(c, u)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}
