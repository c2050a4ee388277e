package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// The error said "meshd by" of a meshed Service, and did not say that a mesh can be joined.
func TestLockedErrorSaysTheRoleAndWhatCanJoin(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		role, has, hasNot string
	}{
		{wire.RoleExchange, "is exchanged by dev@laptop", "can work beside"},
		{wire.RoleMesh, "is meshed by dev@laptop", ""},
	} {
		err := &LockedError{Service: "ns/web", Lock: wire.Lock{Role: tc.role, Owner: "dev@laptop", Since: now, Heartbeat: now}}
		msg := err.Error()
		if !strings.Contains(msg, tc.has) || tc.hasNot != "" && strings.Contains(msg, tc.hasNot) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %s", tc.role, msg)
		}
		if tc.role == wire.RoleMesh && !strings.Contains(msg, "'kubectl kt mesh' and 'kubectl kt mirror' can work beside them") {
			t.Errorf("a mesh's lock does not say that mesh and mirror can join: %s", msg)
		}
	}
}
