package router

import (
	"bufio"
	"bytes"
	"testing"
)

// The router scans every request head from the cluster's clients: peekHead and parseRawHead
// must never panic, and a head they accept ends in a blank line and has at most MaxHeaders
// fields.
func FuzzParseRawHead(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: web\r\nversion: dev1\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		head, ok := peekHead(bufio.NewReader(bytes.NewReader(data)))
		if !ok {
			return
		}
		if !bytes.HasSuffix(head, crlf2) {
			t.Fatalf("head %q does not end in a blank line", head)
		}
		if h, ok := parseRawHead(head); ok && len(h.headers) > MaxHeaders {
			t.Errorf("%d fields accepted", len(h.headers))
		}
	})
}
