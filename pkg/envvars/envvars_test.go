package envvars

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestResolve(t *testing.T) {
	yes := true
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "ns"} }
	client := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: meta("cfg"), Data: map[string]string{"MODE": "dev", "LEVEL": "3", "bad name": "x"}},
		&corev1.Secret{ObjectMeta: meta("creds"), Data: map[string][]byte{"password": []byte("s3cret 'x'")}},
	)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{
			{Name: "side"},
			{Name: "web",
				EnvFrom: []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "APP_"},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: &yes}},
				},
				Env: []corev1.EnvVar{
					{Name: "APP_MODE", Value: "prod"}, // replaces envFrom's
					{Name: "URL", Value: "http://$(POD):$(PORT)/$(APP_MODE) $$(POD)"},
					{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "AFTER", Value: "$(POD)"},
					{Name: "APPL", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
					{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
					{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
					{Name: "LVL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "LEVEL"}}},
					{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: &yes}}},
					{Name: "NEEDED", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "user"}}},
					{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
					{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu"}}},
				},
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("300Mi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				},
			},
		}},
	}
	vars, warnings, err := (&Resolver{Client: client}).Resolve(context.Background(), pod, "web")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.Name+"="+v.Value)
	}
	want := []string{
		"APP_LEVEL=3", "APP_MODE=prod",
		"URL=http://$(POD):$(PORT)/prod $(POD)", // POD comes later, PORT never: both stay
		"POD=web-1", "AFTER=web-1", "APPL=web", "NODE=node-a",
		"PASSWORD=s3cret 'x'", "LVL=3", "MEM_MI=300", "CPU=1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `NEEDED: key "user" of secret creds not found`) {
		t.Errorf("warnings: %q", warnings)
	}
	if _, _, err := (&Resolver{Client: client}).Resolve(context.Background(), pod, "db"); err == nil || !strings.Contains(err.Error(), "its containers: side, web") {
		t.Errorf("unknown container: %v", err)
	}
	if vars, _, err := (&Resolver{Client: client}).Resolve(context.Background(), pod, ""); err != nil || len(vars) != 0 {
		t.Errorf("the first container by default: %v, %v", vars, err)
	}
}

func TestExpand(t *testing.T) {
	vars := []Var{{"A", "x"}}
	index := map[string]int{"A": 0}
	for in, want := range map[string]string{
		"$(A)": "x", "$$(A)": "$(A)", "$(B)": "$(B)", "a$": "a$", "$(A": "$(A", "$A": "$A", "$$": "$", "$(A)$(A)": "xx",
	} {
		if got := expand(in, vars, index); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteSh evaluates the sh output in a real shell: every value comes back byte for byte.
func TestWriteSh(t *testing.T) {
	vars := []Var{{"PLAIN", "a.b/c:1"}, {"SPACE", "two words"}, {"QUOTE", `it's "q" \ $HOME`}, {"NL", "a\nb"}, {"EMPTY", ""}}
	var b bytes.Buffer
	if err := Write(&b, vars, "sh"); err != nil {
		t.Fatal(err)
	}
	script := b.String() + `printf '%s\0' "$PLAIN" "$SPACE" "$QUOTE" "$NL" "$EMPTY"`
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	for i, v := range vars {
		if i >= len(got) || got[i] != v.Value {
			t.Errorf("%s: got %q, want %q\n%s", v.Name, got, v.Value, b.String())
			break
		}
	}
	b.Reset()
	Write(&b, vars, "dotenv")
	if want := "PLAIN=a.b/c:1\nSPACE=\"two words\"\nQUOTE=\"it's \\\"q\\\" \\\\ \\$HOME\"\nNL=\"a\\nb\"\nEMPTY=\n"; b.String() != want {
		t.Errorf("dotenv:\n%s\nwant\n%s", b.String(), want)
	}
	if err := Write(&b, vars, "yaml"); err == nil {
		t.Error("an unknown format was accepted")
	}
}
