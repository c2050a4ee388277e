package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The sink answers pipelined requests in order, bodies of known length skipped, and ends a
// connection whose body it cannot frame.
func TestSinkAnswersPipelinedRequests(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go sinkConn(b)
	a.SetDeadline(time.Now().Add(5 * time.Second))
	reqs := "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nxx" +
		"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
	go io.WriteString(a, reqs)
	br := bufio.NewReader(a)
	for i := range 3 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "sunk\n" {
			t.Fatalf("answer %d: %d %q", i+1, resp.StatusCode, body)
		}
	}
	go io.WriteString(a, "POST /4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	if _, err := br.ReadByte(); err != io.EOF && !strings.Contains(err.Error(), "closed") {
		t.Fatalf("a chunked request got %v, want the connection closed", err)
	}
}
