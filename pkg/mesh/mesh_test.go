package mesh

import (
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseVersionMark(t *testing.T) {
	for _, c := range []struct {
		in, key, value string
		ok             bool
	}{
		{"", "version", "", true},
		{"dev1", "version", "dev1", true},
		{"x-dev:two", "x-dev", "two", true},
		{"canary:", "canary", "", true},
		{":v2", "version", "v2", true},
		{"Bad:x", "", "", false},
		{"version:a b", "", "", false},
		{"1abc:x", "", "", false},
	} {
		k, v, err := ParseVersionMark(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if !c.ok {
			continue
		}
		if k != c.key || (c.value != "" && v != c.value) || len(v) == 0 {
			t.Errorf("%q: got %q:%q, want %q:%q", c.in, k, v, c.key, c.value)
		}
	}
	_, a, _ := ParseVersionMark("")
	_, b, _ := ParseVersionMark("")
	if a == b || len(a) != 5 {
		t.Errorf("default values %q and %q: want five random letters each time", a, b)
	}
}

func TestRouterResources(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "agent"}}}}
	routerResources(pod)
	c := pod.Spec.Containers[0]
	if pod.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restart policy %s: a router that dies must come back", pod.Spec.RestartPolicy)
	}
	if m := c.Resources.Limits[corev1.ResourceMemory]; m.String() != "256Mi" {
		t.Errorf("memory limit %s", m.String())
	}
	if len(c.Env) != 1 || c.Env[0].Name != "GOMEMLIMIT" || c.Env[0].Value != strconv.Itoa(256<<20*4/5) {
		t.Errorf("env %v", c.Env)
	}
	// --pod-quota's memory stays, and sets GOMEMLIMIT.
	q := resource.MustParse("1Gi")
	pod = &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: q}, Limits: corev1.ResourceList{corev1.ResourceMemory: q}}}}}}
	routerResources(pod)
	if m := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; m.String() != "1Gi" || pod.Spec.Containers[0].Env[0].Value != strconv.Itoa(1<<30*4/5) {
		t.Errorf("with --pod-quota: %s %v", m.String(), pod.Spec.Containers[0].Env)
	}
}
