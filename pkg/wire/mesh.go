package wire

import (
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// MeshAnnotation on a meshed Service holds its MeshState: the router, the Service that
// selects the original pods, and the developers meshing it. Clients join and leave by
// updating it; the router reads it for its routes.
const MeshAnnotation = Domain + "/mesh"

// MeshState is the state of a meshed Service.
type MeshState struct {
	Router  string       `json:"router"`  // router pod
	Origin  string       `json:"origin"`  // Service selecting the original pods
	Ports   []int32      `json:"ports"`   // target ports the router and shadows listen on
	Members []MeshMember `json:"members"` // developers, in join order
}

// MeshMember is one developer's route: requests whose header Key equals Value go to Shadow.
type MeshMember struct {
	Owner     string    `json:"owner"`
	Session   string    `json:"session"`
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	Shadow    string    `json:"shadow"` // pod IP of the developer's shadow
	Heartbeat time.Time `json:"heartbeat"`
	// Mirror makes the member a mirror: it takes no request away, it gets a copy of each
	// (of those carrying Key: Value when Key is set, and under PathPrefix when set).
	Mirror     bool   `json:"mirror,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Sent and Dropped count a mirror's copies, as its client last read them from the router.
	Sent    int64 `json:"sent,omitempty"`
	Dropped int64 `json:"dropped,omitempty"`
}

// MirrorStats counts one mirror's copies at the router.
type MirrorStats struct {
	Sent    int64 `json:"sent"`    // delivered, and an answer read
	Dropped int64 `json:"dropped"` // not delivered: a full queue, a laptop slow, gone or refusing
	// Batches counts the writes HTTP/1.1 copies went out in, several copies pipelined in each
	// under load.
	Batches int64 `json:"batches,omitempty"`
}

// GetMesh reads the mesh state of svc.
func GetMesh(svc *corev1.Service) (*MeshState, bool) {
	s, ok := svc.Annotations[MeshAnnotation]
	if !ok {
		return nil, false
	}
	var m MeshState
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil, false
	}
	return &m, true
}

// SetMesh writes m onto svc; nil removes it.
func SetMesh(svc *corev1.Service, m *MeshState) {
	if m == nil {
		delete(svc.Annotations, MeshAnnotation)
		return
	}
	b, _ := json.Marshal(m)
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations[MeshAnnotation] = string(b)
}

// Live returns the members whose heartbeat is newer than maxAge.
func (m *MeshState) Live(maxAge time.Duration) []MeshMember {
	var out []MeshMember
	for _, mm := range m.Members {
		if time.Since(mm.Heartbeat) < maxAge {
			out = append(out, mm)
		}
	}
	return out
}
