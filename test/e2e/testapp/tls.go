package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// sniffListener serves TLS (with a self-signed certificate) and plain HTTP on one port: a
// connection whose first byte starts a TLS handshake record is served by tls.Server. The
// choice is made at the first read, so a quiet client does not hold up Accept.
type sniffListener struct {
	net.Listener
	cfg *tls.Config
}

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, cfg: l.cfg}, nil
}

type sniffConn struct {
	net.Conn
	cfg  *tls.Config
	once sync.Once
	rw   io.ReadWriter
}

func (c *sniffConn) decide() {
	c.once.Do(func() {
		br := bufio.NewReader(c.Conn)
		pc := peekedConn{c.Conn, br}
		if b, err := br.Peek(1); err == nil && b[0] == 0x16 {
			c.rw = tls.Server(pc, c.cfg)
			return
		}
		c.rw = pc
	})
}

func (c *sniffConn) Read(p []byte) (int, error)  { c.decide(); return c.rw.Read(p) }
func (c *sniffConn) Write(p []byte) (int, error) { c.decide(); return c.rw.Write(p) }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func selfSigned() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testapp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"*"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// get fetches one URL (https without verifying the certificate) and prints the body.
func get(args []string) {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	hdr := fs.String("H", "", "a header to send, NAME: VALUE")
	fs.Parse(args)
	req, err := http.NewRequest(http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		log.Fatal(err)
	}
	setHeader(req, *hdr)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Printf("tls=%v ", resp.TLS != nil)
	io.Copy(os.Stdout, resp.Body)
}

// setHeader sets the request header given as 'NAME: VALUE'; anything without a colon sets none.
func setHeader(req *http.Request, h string) {
	if k, v, ok := strings.Cut(h, ":"); ok {
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
}
