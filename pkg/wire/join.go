package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Joining a shared shadow. Its join key lives in a Secret (JoinSecretKey of the Secret named
// as the pod) that only those who may read Secrets in the namespace can read; the agent has it
// in EnvJoinKey. Holding pods/portforward is not enough to join: a client POSTs a JoinRequest
// to /authorize (or /leave) on the health port, proving the key, and the agent answers with
// its SSH host key, proving the key too, so that a client sends nothing to a pod that is not
// the namespace's shared shadow and pins the host key before it logs in.
const (
	EnvJoinKey    = "KT_JOIN_KEY"
	JoinSecretKey = "join-key"
	// JoinNonceLen is the length of the client's nonce, which the agent's answer covers.
	JoinNonceLen = 32
)

// The purposes a join MAC is made for: one can never pass for another.
const (
	JoinAuthorize = "kt-authorize"
	JoinLeave     = "kt-leave"
	JoinAgent     = "kt-agent"
)

// JoinRequest is a client's POST to /authorize or /leave.
type JoinRequest struct {
	Key   string `json:"key"` // the client's authorized_keys line
	Nonce []byte `json:"nonce"`
	MAC   []byte `json:"mac"` // JoinMAC(key, JoinAuthorize or JoinLeave, Key, Nonce)
}

// JoinReply is the agent's answer to a JoinRequest.
type JoinReply struct {
	HostKey string `json:"hostKey"` // the agent's SSH host key, an authorized_keys line
	Others  int    `json:"others"`  // /leave: how many other clients still have connections
	MAC     []byte `json:"mac"`     // JoinMAC(key, JoinAgent, HostKey, Nonce, Others)
}

// JoinMAC is HMAC-SHA256 under key of purpose and the fields, each length-prefixed.
func JoinMAC(key []byte, purpose string, fields ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range append([][]byte{[]byte(purpose)}, fields...) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		m.Write(n[:])
		m.Write(f)
	}
	return m.Sum(nil)
}

// ReplyMAC is the MAC of an agent's JoinReply to a request with nonce.
func ReplyMAC(key []byte, r JoinReply, nonce []byte) []byte {
	var others [8]byte
	binary.BigEndian.PutUint64(others[:], uint64(r.Others))
	return JoinMAC(key, JoinAgent, []byte(r.HostKey), nonce, others[:])
}

// RequestMAC is the MAC of a client's JoinRequest for purpose.
func RequestMAC(key []byte, purpose string, r JoinRequest) []byte {
	return JoinMAC(key, purpose, []byte(r.Key), r.Nonce)
}
