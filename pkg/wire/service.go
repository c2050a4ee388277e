package wire

import (
	"encoding/json"
	"fmt"
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
// (once: a second redirect by the same session keeps the first original).
func RedirectService(svc *corev1.Service, sel map[string]string) {
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	if _, ok := svc.Annotations[UndoAnnotation]; !ok {
		b, _ := json.Marshal(ServiceUndo{Selector: svc.Spec.Selector})
		svc.Annotations[UndoAnnotation] = string(b)
	}
	svc.Spec.Selector = sel
}

// RestoreService undoes kt's change to svc in place: the original selector comes back and kt's
// annotations go. With session set, only that session's change is undone. It reports whether
// svc changed.
func RestoreService(svc *corev1.Service, session string) (bool, error) {
	l, locked := ServiceLock(svc)
	undoStr, hasUndo := svc.Annotations[UndoAnnotation]
	_, meshed := svc.Annotations[MeshAnnotation]
	if !locked && !hasUndo && !meshed {
		return false, nil
	}
	if session != "" && locked && l.Session != session {
		return false, fmt.Errorf("service %s/%s is now held by %s (session %s), not by session %s", svc.Namespace, svc.Name, l.Owner, l.Session, session)
	}
	if hasUndo {
		var u ServiceUndo
		if err := json.Unmarshal([]byte(undoStr), &u); err != nil {
			return false, fmt.Errorf("service %s/%s: unreadable %s annotation: %w", svc.Namespace, svc.Name, UndoAnnotation, err)
		}
		svc.Spec.Selector = u.Selector
	}
	delete(svc.Annotations, UndoAnnotation)
	delete(svc.Annotations, LockAnnotation)
	delete(svc.Annotations, MeshAnnotation)
	if len(svc.Annotations) == 0 {
		svc.Annotations = nil
	}
	return true, nil
}
