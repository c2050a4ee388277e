package wire

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Annotations on a Service that kt changed. They hold the lock (who changes it, and since
// when) and the inverse of the change, so that the client on exit, the shadow after a crashed
// client, `kubectl kt recover` and `kubectl kt clean` can all restore it.
const (
	LockAnnotation = Domain + "/lock"
	// UndoAnnotation (see wire.go) holds a ServiceUndo on Services.
)

// Lock says who holds a Service.
type Lock struct {
	Owner     string    `json:"owner"`   // user@host
	Session   string    `json:"session"` // client session id
	Role      string    `json:"role"`    // exchange, mesh
	Command   string    `json:"command,omitempty"`
	Since     time.Time `json:"since"`
	Heartbeat time.Time `json:"heartbeat"`
}

// ServiceUndo is the inverse of kt's change to a Service.
type ServiceUndo struct {
	Selector map[string]string `json:"selector"`
	// Set is the selector kt put in its place: a restore brings Selector back only while the
	// Service still has it (someone who changed the selector meanwhile keeps their change).
	Set map[string]string `json:"set,omitempty"`
}

// ServiceLock returns the lock on svc, if any.
func ServiceLock(svc *corev1.Service) (*Lock, bool) {
	s, ok := svc.Annotations[LockAnnotation]
	if !ok {
		return nil, false
	}
	var l Lock
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return &Lock{Owner: "unknown (unreadable lock)"}, true
	}
	return &l, true
}

// SetServiceLock writes l onto svc.
func SetServiceLock(svc *corev1.Service, l Lock) {
	b, _ := json.Marshal(l)
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations[LockAnnotation] = string(b)
}

// RedirectService points svc's selector at sel, recording the original selector as the undo
// (once: a second redirect by the same session keeps the first original) and sel as kt's.
func RedirectService(svc *corev1.Service, sel map[string]string) {
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	var u ServiceUndo
	if s, ok := svc.Annotations[UndoAnnotation]; !ok || json.Unmarshal([]byte(s), &u) != nil {
		u = ServiceUndo{Selector: svc.Spec.Selector}
	}
	u.Set = sel
	b, _ := json.Marshal(u)
	svc.Annotations[UndoAnnotation] = string(b)
	svc.Spec.Selector = sel
}

// Restored tells what RestoreService did.
type Restored struct {
	Changed bool // svc changed: kt's annotations went, and the selector unless Kept
	// Kept is set when the selector was no longer the one kt put there: someone changed it
	// meanwhile, and their selector stays (Original is what kt would have restored).
	Kept     bool
	Original map[string]string
}

// RestoreService undoes kt's change to svc in place: the original selector comes back (unless
// someone replaced kt's selector since, see Restored.Kept) and kt's annotations go. With
// session set, only that session's change is undone.
func RestoreService(svc *corev1.Service, session string) (Restored, error) {
	var r Restored
	l, locked := ServiceLock(svc)
	undoStr, hasUndo := svc.Annotations[UndoAnnotation]
	_, meshed := svc.Annotations[MeshAnnotation]
	if !locked && !hasUndo && !meshed {
		return r, nil
	}
	if session != "" && locked && l.Session != session {
		return r, fmt.Errorf("service %s/%s is now held by %s (session %s), not by session %s", svc.Namespace, svc.Name, l.Owner, l.Session, session)
	}
	if hasUndo {
		var u ServiceUndo
		if err := json.Unmarshal([]byte(undoStr), &u); err != nil {
			return r, fmt.Errorf("service %s/%s: unreadable %s annotation: %w", svc.Namespace, svc.Name, UndoAnnotation, err)
		}
		if u.Set != nil && !maps.Equal(u.Set, svc.Spec.Selector) {
			r.Kept, r.Original = true, u.Selector
		} else {
			svc.Spec.Selector = u.Selector
		}
	}
	delete(svc.Annotations, UndoAnnotation)
	delete(svc.Annotations, LockAnnotation)
	delete(svc.Annotations, MeshAnnotation)
	if len(svc.Annotations) == 0 {
		svc.Annotations = nil
	}
	r.Changed = true
	return r, nil
}

// KeptNote is the line to tell a user when a restore kept their selector.
func (r Restored) KeptNote(ns, name string) string {
	return fmt.Sprintf("note: the selector of service %s/%s was changed while kt held it; your change stays (kt would have restored %v)", ns, name, r.Original)
}
