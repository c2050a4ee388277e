package main

import (
	"bytes"
	"flag"
	"log"
	"net"
	"strconv"
)

// sink answers HTTP/1.1 requests at the least cost a server can: whatever one read brings,
// each whole request in it gets the same short answer, all of them in one write. It stands in
// for a mirror's laptop inside the cluster in BenchmarkMirror, so that what the router alone
// costs the originals is told apart from the port-forward path to the laptop. A request whose
// body is not of known length (chunked) ends the connection.
func sink(args []string) {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	addr := fs.String("http", ":8080", "listen address")
	fs.Parse(args)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("testapp sink on %s", *addr)
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go sinkConn(c)
	}
}

var sinkAnswer = []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsunk\n")

func sinkConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	var pending, out []byte
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		pending = append(pending, buf[:n]...)
		out = out[:0]
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			length, ok := sinkBodyLength(pending[:i+2])
			if !ok {
				c.Write(out)
				return
			}
			if len(pending) < i+4+length {
				break
			}
			pending = pending[i+4+length:]
			out = append(out, sinkAnswer...)
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if len(pending) == 0 {
			pending = nil // do not keep a large buffer for a quiet connection
		}
	}
}

// sinkBodyLength reads Content-Length from a head (its lines, each ending in CRLF); ok is false
// for a body the sink cannot frame.
func sinkBodyLength(head []byte) (int, bool) {
	length := 0
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		switch string(bytes.ToLower(bytes.TrimSpace(name))) {
		case "content-length":
			n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || n < 0 {
				return 0, false
			}
			length = n
		case "transfer-encoding":
			return 0, false
		}
	}
	return length, true
}
