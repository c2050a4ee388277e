package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func newKey(t *testing.T) gossh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := gossh.NewPublicKey(pub)
	return k
}

// A pod someone else made under the shared shadow's name does not hold the join key: the
// client refuses its answer, whatever it says, and so never logs in to it.
func TestJoinRequestRefusesAnAgentWithoutTheJoinKey(t *testing.T) {
	joinKey := []byte(strings.Repeat("j", 64))
	hostKey := string(gossh.MarshalAuthorizedKey(newKey(t)))
	var recorded wire.JoinReply // a genuine answer, to replay
	agent := func(key []byte, replay bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req wire.JoinRequest
			b, _ := io.ReadAll(r.Body)
			json.Unmarshal(b, &req)
			reply := wire.JoinReply{HostKey: hostKey}
			reply.MAC = wire.ReplyMAC(key, reply, req.Nonce)
			if replay {
				reply = recorded
			} else {
				recorded = reply
			}
			json.NewEncoder(w).Encode(reply)
		}))
	}
	ctx := context.Background()
	try := func(srv *httptest.Server) error {
		defer srv.Close()
		hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
		hc.Transport.(*http.Transport).DialContext = (&httpDialer{srv.Listener.Addr().String()}).dial
		_, _, _, err := joinRequest(ctx, hc, "/authorize", wire.JoinAuthorize, joinKey, newKey(t))
		return err
	}
	if err := try(agent(joinKey, false)); err != nil {
		t.Fatalf("the genuine agent: %v", err)
	}
	if err := try(agent([]byte(strings.Repeat("x", 64)), false)); err == nil || !strings.Contains(err.Error(), "join key") {
		t.Errorf("an agent with another key: %v, want refused", err)
	}
	if err := try(agent(joinKey, true)); err == nil || !strings.Contains(err.Error(), "join key") {
		t.Errorf("a genuine answer replayed to another nonce: %v, want refused", err)
	}
}

type httpDialer struct{ addr string }

func (d *httpDialer) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, network, d.addr)
}
