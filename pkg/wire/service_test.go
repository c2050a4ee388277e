package wire

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRedirectRestore(t *testing.T) {
	orig := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	svc := orig.DeepCopy()
	SetServiceLock(svc, Lock{Owner: "a@b", Session: "s1", Since: time.Now(), Heartbeat: time.Now()})
	RedirectService(svc, map[string]string{SessionLabel: "s1"})
	RedirectService(svc, map[string]string{SessionLabel: "s1", "x": "y"}) // keeps the first original
	if svc.Spec.Selector["app"] != "" {
		t.Fatalf("selector not redirected: %v", svc.Spec.Selector)
	}
	if _, err := RestoreService(svc.DeepCopy(), "other"); err == nil {
		t.Error("another session restored the Service")
	}
	r, err := RestoreService(svc, "s1")
	if err != nil || !r.Changed || r.Kept {
		t.Fatalf("restore: %+v %v", r, err)
	}
	if !reflect.DeepEqual(svc, orig) {
		t.Errorf("restored %+v, want %+v", svc, orig)
	}
	if r, _ := RestoreService(svc, ""); r.Changed {
		t.Error("restoring an untouched Service changed it")
	}
}

// Someone changes the selector while kt holds the Service (a rollout to v2): the restore keeps
// their selector instead of bringing back the one kt saw (it used to put v1 back).
func TestRestoreKeepsASelectorChangedMeanwhile(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "v": "1"}}}
	SetServiceLock(svc, Lock{Owner: "a@b", Session: "s1", Since: time.Now(), Heartbeat: time.Now()})
	RedirectService(svc, map[string]string{ExchangeLabel: "s1"})
	svc.Spec.Selector = map[string]string{"app": "web", "v": "2"}
	r, err := RestoreService(svc, "s1")
	if err != nil || !r.Changed || !r.Kept || r.Original["v"] != "1" {
		t.Fatalf("restore: %+v %v", r, err)
	}
	if svc.Spec.Selector["v"] != "2" || svc.Annotations != nil {
		t.Errorf("after restore: selector %v, annotations %v", svc.Spec.Selector, svc.Annotations)
	}
}
