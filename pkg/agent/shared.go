package agent

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	gossh "golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// handleJoins serves a shared shadow's /authorize and /leave on mux (the health port). Each
// takes only a wire.JoinRequest whose MAC proves joinKey, and answers with the agent's host
// key and a MAC over it and the request's nonce, so the client knows it talks to the pod
// that holds the namespace's join key before it logs in. Holding pods/portforward alone
// registers nothing and removes nobody.
func handleJoins(mux *http.ServeMux, keys *keySet, joinKey []byte, hostKey gossh.PublicKey) {
	hostLine := string(gossh.MarshalAuthorizedKey(hostKey))
	handle := func(path, purpose string, do func(k gossh.PublicKey) (others int)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			req, k, ok := joinRequest(w, r, joinKey, purpose)
			if !ok {
				return
			}
			reply := wire.JoinReply{HostKey: hostLine, Others: do(k)}
			reply.MAC = wire.ReplyMAC(joinKey, reply, req.Nonce)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(reply)
		})
	}
	handle("/authorize", wire.JoinAuthorize, func(k gossh.PublicKey) int {
		keys.add(k)
		klog.Background().Info("shared shadow: a client joined", "fingerprint", gossh.FingerprintSHA256(k))
		return 0
	})
	// A leaving client learns whether others still use the shadow (then it leaves it be).
	handle("/leave", wire.JoinLeave, func(k gossh.PublicKey) int {
		others := keys.leave(k)
		klog.Background().Info("shared shadow: a client left", "fingerprint", gossh.FingerprintSHA256(k), "others", others)
		return others
	})
}

// joinRequest reads a wire.JoinRequest for purpose and checks its MAC, or answers why not.
func joinRequest(w http.ResponseWriter, r *http.Request, joinKey []byte, purpose string) (wire.JoinRequest, gossh.PublicKey, bool) {
	var req wire.JoinRequest
	if r.Method != http.MethodPost {
		http.Error(w, "POST a join request", http.StatusMethodNotAllowed)
		return req, nil, false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err != nil || len(req.Nonce) != wire.JoinNonceLen {
		http.Error(w, "want a join request (kubectl kt 0.1 or later)", http.StatusBadRequest)
		return req, nil, false
	}
	if !hmac.Equal(req.MAC, wire.RequestMAC(joinKey, purpose, req)) {
		klog.Background().Info("shared shadow: refused a request without the join key", "path", r.URL.Path)
		http.Error(w, "the join key does not match the shared shadow's Secret", http.StatusForbidden)
		return req, nil, false
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(req.Key))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return req, nil, false
	}
	return req, k, true
}

// keySet holds the keys of a shared shadow's later clients, and counts the connections each
// key (the first client's too) has open.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
	open map[string]int
	left map[string]bool
}

func newKeySet() *keySet {
	return &keySet{keys: map[string]bool{}, open: map[string]int{}, left: map[string]bool{}}
}

func (s *keySet) connected(k gossh.PublicKey) func() {
	id := string(k.Marshal())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open[id]++
	delete(s.left, id)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.open[id]--; s.open[id] <= 0 {
			delete(s.open, id)
		}
	}
}

// leave marks k as gone (its connections may take a while to drop) and counts the keys that
// still have connections open.
func (s *keySet) leave(k gossh.PublicKey) int {
	id := string(k.Marshal())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.left[id] = true
	n := 0
	for other := range s.open {
		if !s.left[other] {
			n++
		}
	}
	return n
}

func (s *keySet) add(k gossh.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[string(k.Marshal())] = true
}

func (s *keySet) has(k gossh.PublicKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[string(k.Marshal())]
}
