package wire

import (
	"crypto/hmac"
	"crypto/sha256"
)

// A mirror's shadow can also take reverse streams through the API server's pod proxy
// (pods/NAME:PORT/proxy), which dials the pod's IP itself: the copies then skip the kubelet
// and the container runtime, which a port-forward stream crosses, and which share the node
// with the pods whose requests are copied. The agent listens for them on the pod's IP (at
// EnvProxyPort), so any pod in the cluster may connect too; a stream is taken only once it
// proves the agent's stream secret, which only a client logged in over SSH knows, without
// sending it: the API server reaches the pod over plain TCP.
//
//	client → agent  GET ProxyPath, Upgrade: ProxyUpgrade (through the API server)
//	agent → client  101 Switching Protocols, then a random nonce (ProxyNonceLen bytes)
//	client → agent  ProxyProof(secret, nonce), then the stream is a reverse stream (hello, …)
const (
	ProxyPort     = 2086 // or the first port above that neither a forward nor the probe uses
	ProxyPath     = "/reverse"
	ProxyUpgrade  = "kt-reverse/1"
	ProxyNonceLen = 32
	// EnvProxyPort, when set, makes the agent take reverse streams on the pod's IP at this port.
	EnvProxyPort = "KT_PROXY_PORT"
)

// ProxyProof is what a client answers a nonce with: HMAC-SHA256 under the agent's secret.
func ProxyProof(secret, nonce []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ProxyUpgrade))
	m.Write(nonce)
	return m.Sum(nil)
}
