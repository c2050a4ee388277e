package mount

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:      "web",
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/config"},
					{Name: "config", MountPath: "/etc/app.yaml", SubPath: "app.yaml"},
					{Name: "creds", MountPath: "/etc/creds"},
					{Name: "info", MountPath: "/etc/podinfo"},
					{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
					{Name: "scratch", MountPath: "/tmp/scratch"},
					{Name: "maybe", MountPath: "/etc/maybe"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}},
				{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "web-creds", DefaultMode: ptr.To[int32](0o600),
					Items: []corev1.KeyToPath{{Key: "password", Path: "db/password"}}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
					{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "web", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
				}}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "maybe", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr.To(true)}}},
			},
		},
	}
}

func testObjects() *fake.Clientset {
	return fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config", Namespace: "ns"}, Data: map[string]string{"app.yaml": "port: 8080\n", "level": "info"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"}, Data: map[string]string{"ca.crt": "CA"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-creds", Namespace: "ns"}, Data: map[string][]byte{"password": []byte("s3cret"), "other": []byte("x")}})
}

func TestResolve(t *testing.T) {
	r := &Resolver{Client: testObjects()}
	ms, skipped, err := r.Resolve(context.Background(), testPod(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range ms {
		for _, f := range m.Files {
			got[m.Path+"|"+f.Path] = string(f.Data)
		}
	}
	want := map[string]string{
		"/etc/config|app.yaml":   "port: 8080\n",
		"/etc/config|level":      "info",
		"/etc/app.yaml|":         "port: 8080\n",
		"/etc/creds|db/password": "s3cret",
		"/etc/podinfo|labels":    "app=\"web\"\ntier=\"front\"",
		"/etc/podinfo|name":      "web-1",
		"/etc/podinfo|mem":       "64",
		"/var/run/secrets/kubernetes.io/serviceaccount|ca.crt":    "CA",
		"/var/run/secrets/kubernetes.io/serviceaccount|namespace": "ns",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("files %v, want %v", got, want)
	}
	var sk []string
	for _, s := range skipped {
		sk = append(sk, s.String())
	}
	if s := strings.Join(sk, "; "); !strings.Contains(s, "/tmp/scratch (scratch: emptyDir") || !strings.Contains(s, "serviceaccount/token") || len(skipped) != 2 {
		t.Errorf("skipped: %s", s)
	}
}

func TestResolveErrors(t *testing.T) {
	pod := testPod()
	if _, _, err := (&Resolver{Client: fake.NewClientset()}).Resolve(context.Background(), pod, ""); err == nil || !strings.Contains(err.Error(), "configmap ns/web-config") {
		t.Errorf("a missing ConfigMap that is not optional: %v", err)
	}
	if _, _, err := (&Resolver{Client: testObjects()}).Resolve(context.Background(), pod, "sidecar"); err == nil || !strings.Contains(err.Error(), `no container "sidecar"`) {
		t.Errorf("a missing container: %v", err)
	}
}

// TestWrite lays out, updates and removes a mount as the kubelet's atomic writer does, and
// refuses paths that would leave the mount.
func TestWrite(t *testing.T) {
	state := t.TempDir()
	root := filepath.Join(t.TempDir(), "m")
	d, err := Open(root, state)
	if err != nil {
		t.Fatal(err)
	}
	ms := []Mount{
		{Path: "/etc/config", Files: []File{{Path: "app.yaml", Data: []byte("v1"), Mode: 0o644}, {Path: "old", Data: []byte("o"), Mode: 0o644}}},
		{Path: "/etc/one", File: true, Files: []File{{Data: []byte("one"), Mode: 0o600}}},
	}
	if ch, err := d.Write(ms); err != nil || len(ch) != 2 {
		t.Fatalf("first write: %v %v", ch, err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if read("etc/config/app.yaml") != "v1" || read("etc/one") != "one" {
		t.Errorf("content: %q %q", read("etc/config/app.yaml"), read("etc/one"))
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/config/app.yaml")); fi.Mode().Perm() != 0o444 {
		t.Errorf("mode %v, want read-only 0444", fi.Mode())
	}
	if fi, _ := os.Stat(root); fi.Mode().Perm() != 0o700 {
		t.Errorf("root mode %v, want 0700", fi.Mode())
	}
	if ch, _ := d.Write(ms); len(ch) != 0 {
		t.Errorf("an unchanged write changed %v", ch)
	}
	ms[0].Files = []File{{Path: "app.yaml", Data: []byte("v2"), Mode: 0o644}}
	if ch, err := d.Write(ms); err != nil || len(ch) != 1 || ch[0] != "/etc/config" {
		t.Fatalf("update: %v %v", ch, err)
	}
	if read("etc/config/app.yaml") != "v2" || !strings.HasPrefix(read("etc/config/old"), "<") {
		t.Errorf("after the update: %q, old %q", read("etc/config/app.yaml"), read("etc/config/old"))
	}
	es, _ := os.ReadDir(filepath.Join(root, "etc/config"))
	if len(es) != 3 { // ..data, one timestamped directory, app.yaml
		t.Errorf("entries after the update: %v", es)
	}
	for _, bad := range []string{"../escape", "/abs", "a/../../b", "..data", "x/..y"} {
		if _, err := d.Write([]Mount{{Path: "/etc/bad", Files: []File{{Path: bad, Data: []byte("x")}}}}); err == nil {
			t.Errorf("path %q was written", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
		t.Error("a file escaped the root")
	}
	if gone, _ := CleanStale(state, false); len(gone) != 0 {
		t.Errorf("clean took a live mount: %v", gone)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Error("the root kt made is left")
	}
	if ps, _ := filepath.Glob(filepath.Join(state, "*")); len(ps) != 0 {
		t.Errorf("records left: %v", ps)
	}
}

func TestOpenRefusesAFullDirectory(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "mine"), []byte("keep"), 0o600)
	if _, err := Open(root, ""); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a directory with a file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "mine")); string(b) != "keep" {
		t.Error("the user's file was touched")
	}
	empty := t.TempDir()
	d, err := Open(empty, "")
	if err != nil {
		t.Fatal(err)
	}
	d.Write([]Mount{{Path: "/a", File: true, Files: []File{{Data: []byte("x")}}}})
	d.Close()
	if es, err := os.ReadDir(empty); err != nil || len(es) != 0 {
		t.Errorf("a given root is kept, emptied: %v %v", es, err)
	}
}

// TestCleanStale removes a root whose record nobody holds (its process was killed), and
// only a root that has kt's marker.
func TestCleanStale(t *testing.T) {
	state, base := t.TempDir(), t.TempDir()
	crashed := filepath.Join(base, "crashed")
	os.MkdirAll(filepath.Join(crashed, "etc"), 0o700)
	os.WriteFile(filepath.Join(crashed, Marker), nil, 0o400)
	notOurs := filepath.Join(base, "not-ours")
	os.MkdirAll(notOurs, 0o700)
	os.WriteFile(filepath.Join(state, "mount-1.json"), []byte(`{"pid":1,"root":"`+crashed+`","created":true}`), 0o600)
	os.WriteFile(filepath.Join(state, "mount-2.json"), []byte(`{"pid":2,"root":"`+notOurs+`","created":true}`), 0o600)
	if gone, err := CleanStale(state, true); err != nil || len(gone) != 2 {
		t.Fatalf("dry run: %v %v", gone, err)
	}
	if _, err := os.Stat(crashed); err != nil {
		t.Fatal("the dry run removed a root")
	}
	if _, err := CleanStale(state, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); err == nil {
		t.Error("the crashed mount's root is left")
	}
	if _, err := os.Stat(notOurs); err != nil {
		t.Error("a directory without kt's marker was removed")
	}
}

// A refresh every few seconds must not mint a token each time: one is asked for again only
// when 80% of its life has passed.
func TestTokensAreReusedUntilNearTheirExpiry(t *testing.T) {
	client := testObjects()
	issued := 0
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		issued++
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		tr.Status.Token = fmt.Sprintf("token-%d", issued)
		return true, tr, nil // no expiry in the answer: the API's default hour
	})
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	r := &Resolver{Client: client, ServiceAccountToken: true, Now: func() time.Time { return now }}
	token := func() string {
		t.Helper()
		ms, _, err := r.Resolve(context.Background(), testPod(), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			for _, f := range m.Files {
				if f.Path == "token" {
					return string(f.Data)
				}
			}
		}
		t.Fatal("no token file")
		return ""
	}
	if got := token(); got != "token-1" {
		t.Fatalf("first token %q", got)
	}
	now = now.Add(47 * time.Minute)
	if got := token(); got != "token-1" || issued != 1 {
		t.Errorf("after 47 min: %q, %d issued; want the first token again", got, issued)
	}
	now = now.Add(2 * time.Minute) // 49 min: past 80% of the hour
	if got := token(); got != "token-2" || issued != 2 {
		t.Errorf("after 49 min: %q, %d issued; want a new token", got, issued)
	}
}
