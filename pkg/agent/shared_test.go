package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/kubectl-kt/kt/pkg/sshtunnel"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// A shared shadow used to take any key POSTed to /authorize: anyone with pods/portforward
// joined it and used the cluster's network as the pod. Now a key is taken only with a MAC
// under the join key, and the answer proves the key too and carries the host key to pin.
func TestSharedShadowNeedsTheJoinKey(t *testing.T) {
	first, _, rc := clientKey(t)
	const ip = "127.0.0.8"
	joinKey := strings.Repeat("k", 64)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go Run(ctx, Config{AuthorizedKey: first, ListenIP: ip, PodIP: ip, ProbePort: 2098, ResolvConf: rc, Shared: true, JoinKey: joinKey})
	post := func(path string, body []byte) (int, []byte) {
		for i := 0; ; i++ {
			resp, err := http.Post(fmt.Sprintf("http://%s:%d%s", ip, wire.HealthPort, path), "application/json", bytes.NewReader(body))
			if err != nil {
				if i == 100 {
					t.Fatalf("POST %s: %v", path, err)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, b
		}
	}
	login := func(signer gossh.Signer, pin *sshtunnel.HostKey) error {
		c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(wire.SSHPort)))
		if err != nil {
			return err
		}
		cl, err := sshtunnel.Dial(ctx, c, signer, time.Second, pin)
		if err != nil {
			return err
		}
		return cl.Close()
	}
	request := func(signer gossh.Signer, purpose string, key []byte) wire.JoinRequest {
		r := wire.JoinRequest{Key: string(gossh.MarshalAuthorizedKey(signer.PublicKey())), Nonce: make([]byte, wire.JoinNonceLen)}
		rand.Read(r.Nonce)
		r.MAC = wire.RequestMAC(key, purpose, r)
		return r
	}
	evilLine, evil, _ := clientKey(t)

	// The old request, a bare authorized_keys line.
	if code, body := post("/authorize", []byte(evilLine)); code != http.StatusBadRequest {
		t.Errorf("a bare key: %d %s, want 400", code, body)
	}
	// A join request under another key, and one whose MAC is for leaving.
	for name, r := range map[string]wire.JoinRequest{
		"a wrong join key":       request(evil, wire.JoinAuthorize, []byte(strings.Repeat("x", 64))),
		"a MAC made for leaving": request(evil, wire.JoinLeave, []byte(joinKey)),
	} {
		b, _ := json.Marshal(r)
		if code, body := post("/authorize", b); code != http.StatusForbidden {
			t.Errorf("%s: %d %s, want 403", name, code, body)
		}
	}
	if err := login(evil, nil); err == nil {
		t.Fatal("a key registered without the join key logs in")
	}

	// The real thing: the answer proves the join key and names the host key the login shows.
	r := request(evil, wire.JoinAuthorize, []byte(joinKey))
	b, _ := json.Marshal(r)
	code, body := post("/authorize", b)
	var reply wire.JoinReply
	if code != http.StatusOK || json.Unmarshal(body, &reply) != nil {
		t.Fatalf("a join with the key: %d %s", code, body)
	}
	if !hmac.Equal(reply.MAC, wire.ReplyMAC([]byte(joinKey), reply, r.Nonce)) {
		t.Errorf("the agent's answer does not prove the join key")
	}
	hk, _, _, _, err := gossh.ParseAuthorizedKey([]byte(reply.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	var pin sshtunnel.HostKey
	pin.Pin(hk)
	if err := login(evil, &pin); err != nil {
		t.Errorf("a joined key, pinned to the answer's host key: %v", err)
	}
	var wrong sshtunnel.HostKey
	_, other, _ := clientKey(t)
	wrong.Pin(other.PublicKey())
	if err := login(evil, &wrong); err == nil || !strings.Contains(err.Error(), "host key") {
		t.Errorf("a login pinned to another host key: %v, want refused", err)
	}
	// Leaving needs the key too (it used to make the agent count anyone's client as gone).
	lr := request(evil, wire.JoinLeave, []byte(strings.Repeat("x", 64)))
	b, _ = json.Marshal(lr)
	if code, body := post("/leave", b); code != http.StatusForbidden {
		t.Errorf("leave under a wrong key: %d %s, want 403", code, body)
	}
}

func TestSharedShadowRefusesToStartWithoutAJoinKey(t *testing.T) {
	first, _, rc := clientKey(t)
	err := Run(context.Background(), Config{AuthorizedKey: first, ListenIP: "127.0.0.9", PodIP: "127.0.0.9", ResolvConf: rc, Shared: true})
	if err == nil || !strings.Contains(err.Error(), wire.EnvJoinKey) {
		t.Errorf("got %v, want a refusal naming %s", err, wire.EnvJoinKey)
	}
}
