package env

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		output string
		want   string // "" valid; else a part of the error
	}{
		{"dotenv", ""},
		{"sh", ""},
		{"json", ""},
		{"yaml", `-o "yaml": use one of dotenv, json, sh`},
		{"", "use one of"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Output = tc.output
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("-o %q: %v", tc.output, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("-o %q: %v, want an error with %q", tc.output, err, tc.want)
		}
	}
	if o := NewOptions(genericiooptions.IOStreams{}); o.Validate() != nil {
		t.Errorf("the default output is refused")
	}
}

func TestRun(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Env: []corev1.EnvVar{
			{Name: "MODE", Value: "dev"}, {Name: "URL", Value: "http://$(HOST):8080"}, {Name: "HOST", Value: "db"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	var out, errOut bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &errOut})
	o.Target, o.namespace, o.client = "pod/web-1", "ns", fake.NewClientset(pod)
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// $(HOST) is defined after URL: the kubelet leaves it as written, and dotenv quotes the $.
	if got, want := out.String(), "MODE=dev\nURL=\"http://\\$(HOST):8080\"\nHOST=db\n"; got != want {
		t.Errorf("dotenv:\n%s\nwant:\n%s", got, want)
	}

	o.Target = "pod/gone"
	if err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a missing pod: %v", err)
	}
}
