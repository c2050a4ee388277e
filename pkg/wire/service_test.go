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
	changed, err := RestoreService(svc, "s1")
	if err != nil || !changed {
		t.Fatalf("restore: %v %v", changed, err)
	}
	if !reflect.DeepEqual(svc, orig) {
		t.Errorf("restored %+v, want %+v", svc, orig)
	}
	if changed, _ := RestoreService(svc, ""); changed {
		t.Error("restoring an untouched Service changed it")
	}
}
