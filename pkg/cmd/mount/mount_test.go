package mount

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   string
	}{
		{"deploy/web", ""}, {"svc/web", ""}, {"web", ""}, {"pod/web-1", ""}, {"sts/db", ""},
		{"job/x", "write svc/NAME"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Target = tc.target
		err := o.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.target, err, tc.want)
		}
	}
}

// TestRun copies a pod's ConfigMap into the directory given, keeps it current, and removes
// it when ctx ends.
func TestRun(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", VolumeMounts: []corev1.VolumeMount{{Name: "c", MountPath: "/etc/config"}}}},
			Volumes:    []corev1.Volume{{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"a": "1"}}
	client := fake.NewClientset(pod, cm)
	var out bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}})
	o.Target, o.namespace, o.client, o.stateDir = "pod/web-1", "ns", client, t.TempDir()
	o.Dir, o.RefreshInterval = filepath.Join(t.TempDir(), "files"), 20*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- o.Run(ctx) }()
	file := filepath.Join(o.Dir, "etc/config/a")
	wait := func(want string) {
		t.Helper()
		for i := 0; i < 200; i++ {
			if b, _ := os.ReadFile(file); string(b) == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		b, err := os.ReadFile(file)
		t.Fatalf("%s: %q, %v; want %q", file, b, err, want)
	}
	wait("1")
	cm.Data["a"] = "2"
	client.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{})
	wait("2")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.Dir); err == nil {
		t.Error("the files are left")
	}
	if !strings.Contains(out.String(), o.Dir) {
		t.Errorf("the directory is not printed: %q", out.String())
	}
}
