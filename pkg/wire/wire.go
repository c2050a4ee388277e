// Package wire holds what the kt client and the shadow agent must agree on: the agent's
// ports, the label and annotation keys kt puts on cluster objects, and the protocol version.
package wire

import (
	"strings"
	"time"
)

// ProtocolVersion changes whenever client and agent stop understanding each other. The
// agent reports it in its SSH version string and on its readiness endpoint.
const ProtocolVersion = 4

// Ports of the agent. All but the remote forwards, the readiness probe and a mirror's
// pod-proxy front (proxy.go) listen on the pod's loopback only: they are reached through the
// API server's port-forward, so no other pod can use them.
const (
	SSHPort      = 2022 // gliderlabs SSH server: direct-tcpip and tcpip-forward
	MuxPort      = 2082 // mux sessions (pkg/mux) whose every stream is a SOCKS5 CONNECT, see flows.go
	MovePort     = 2083 // a flow's own stream, for the rest of a large download or upload, see flows.go
	DNSPort      = 2053 // DNS forwarder, TCP (queries arrive through the tunnel)
	UDPRelayPort = 2054 // framed UDP relay, see relay.go
	ReversePort  = 2055 // reverse streams for remote forwards, see reverse.go
	HealthPort   = 2081 // HTTP /readyz, /version and /traffic
)

// ProbePort is where a shadow with remote forwards answers the kubelet's readiness probe,
// on the pod's IP: GET /forwarding?port=N is 200 once the client's forward of port N
// listens. (A TCP probe of the forwarded port itself would look like traffic, see Traffic.)
// When a forward uses it, the next free port above takes its place (EnvProbePort).
const ProbePort = 2084

// Traffic is what /traffic on HealthPort answers, from a mesh router or a shadow with
// remote forwards: how long ago a connection last came in on a forwarded or routed port.
// A Service switched away from the pod is only done with it once kube-proxy has followed,
// which nothing in the API shows; the pod sees it.
type Traffic struct {
	SinceLastAccept time.Duration `json:"sinceLastAcceptNs"`
}

// KubeProxySync is how long kube-proxy takes to follow an endpoint change (its minimum sync
// period is about a second); nothing in the API shows when it has.
const KubeProxySync = 1500 * time.Millisecond

// SSHServerVersion is the agent's SSH identification string.
const SSHServerVersion = "SSH-2.0-kt-shadow"

// Label and annotation keys. Every object kt creates or changes carries ManagedByLabel=ManagedBy,
// so that `kubectl kt clean` and the e2e harness find them all with one selector.
const (
	Domain = "kubectl-kt.io"

	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "kubectl-kt"

	RoleLabel    = Domain + "/role"    // connect, exchange, mesh, router, preview, forward
	SessionLabel = Domain + "/session" // random id of the client session that owns the object
	// ExchangeLabel marks the shadows of one exchange or mesh (replacements included); the
	// Service's selector points at it while exchanged.
	ExchangeLabel = Domain + "/exchange"

	OwnerAnnotation     = Domain + "/owner"     // user@host
	CommandAnnotation   = Domain + "/command"   // the command line that made the object
	HeartbeatAnnotation = Domain + "/heartbeat" // RFC 3339 time of the client's last heartbeat
	UndoAnnotation      = Domain + "/undo"      // JSON: how to revert a change to a user object
)

// Roles.
const (
	RoleConnect  = "connect"
	RoleExchange = "exchange"
	RoleMesh     = "mesh"
	RoleRouter   = "router"
	RolePreview  = "preview"
	RoleForward  = "forward"
)

// Done is a role as a past participle, for messages: "exchanged", "meshed".
func Done(role string) string {
	if strings.HasSuffix(role, "e") {
		return role + "d"
	}
	return role + "ed"
}

// PodHeartbeatInterval is how often a client stamps its shadow pod's HeartbeatAnnotation.
const PodHeartbeatInterval = 20 * time.Second

// Agent environment: the client passes the session's public key and settings this way.
const (
	EnvAuthorizedKey  = "KT_AUTHORIZED_KEY"  // OpenSSH authorized_keys line
	EnvSecretDigest   = "KT_SECRET_SHA256"   // SHA-256 of the client's stream secret (auth.go)
	EnvPodIP          = "KT_POD_IP"          // from the downward API
	EnvProbePort      = "KT_PROBE_PORT"      // where the readiness probe is answered, when not ProbePort
	EnvRestoreService = "KT_RESTORE_SERVICE" // namespace/name the agent restores when its client is gone
	EnvSession        = "KT_SESSION"
	EnvPodName        = "KT_POD_NAME"
	EnvPodNamespace   = "KT_POD_NAMESPACE"
	EnvShared         = "KT_SHARED"     // "true": a shared connect shadow, which takes further client keys
	EnvDeployment     = "KT_DEPLOYMENT" // the Deployment that runs the shadow, deleted by the agent when its client is gone
	// EnvFallback lists where each forwarded port's connections go while the client is away
	// (FormatFallback); EnvOriginService names the Service that is (in the pod's namespace),
	// when the session made it for this: the agent deletes it on expiry.
	EnvFallback      = "KT_FALLBACK"
	EnvOriginService = "KT_ORIGIN_SERVICE"
)
