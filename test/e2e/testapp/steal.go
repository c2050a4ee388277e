package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// steal plays a pod that has found a mirror's shadow on the pod network and asks its
// pod-proxy port for a reverse stream, as the API server would, hoping to be handed the
// copies: with no upgrade at all ("plain"), or with the upgrade and a made-up proof
// ("guess"). It prints what the shadow answered and whether a connection came: "handed N
// bytes" is a stolen copy, "closed" a refusal.
func steal(addr, how string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET /reverse HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: kt-reverse/1\r\n\r\n"
	if how == "plain" {
		req = "GET /reverse HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	fmt.Println("answer", resp.Status)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		nonce := make([]byte, 32)
		if _, err := io.ReadFull(br, nonce); err != nil {
			return err
		}
		// A proof it cannot make, then a reverse stream's hello of a generation far ahead,
		// which would push the laptop's own streams out of the pool if it were taken.
		c.Write(bytes.Repeat([]byte{0x5a}, 32))
		c.Write([]byte{'K', 'T', 'R', 'V', 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, br)
	if ne, ok := err.(net.Error); n > 0 {
		fmt.Println("handed", n, "bytes")
	} else if ok && ne.Timeout() {
		fmt.Println("kept open")
	} else {
		fmt.Println("closed")
	}
	return nil
}
