package completion

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func TestTargets(t *testing.T) {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	client := fake.NewClientset([]runtime.Object{
		&corev1.Service{ObjectMeta: meta("shop", "web")},
		&corev1.Service{ObjectMeta: meta("shop", "api")},
		&corev1.Service{ObjectMeta: meta("other", "hidden")},
		&appsv1.Deployment{ObjectMeta: meta("shop", "web")},
		&appsv1.Deployment{ObjectMeta: meta("shop", "worker")},
		&appsv1.StatefulSet{ObjectMeta: meta("shop", "db")},
		&corev1.Pod{ObjectMeta: meta("shop", "web-1")},
	}...)
	all := []string{"svc", "deploy", "sts", "pod"}
	cases := []struct {
		name       string
		bare       bool
		kinds      []string
		toComplete string
		want       []string
		noSpace    bool
	}{
		{"services and the kinds", true, all, "", []string{"api", "web", "svc/", "deploy/", "sts/", "pod/"}, false},
		{"a prefix", true, all, "w", []string{"web"}, false},
		{"only kinds left: no space after them", true, all, "d", []string{"deploy/"}, true},
		{"no bare NAME", false, all, "", []string{"svc/", "deploy/", "sts/", "pod/"}, true},
		{"names of a kind", true, all, "deploy/", []string{"deploy/web", "deploy/worker"}, false},
		{"a name's prefix", true, all, "deploy/wo", []string{"deploy/worker"}, false},
		{"the kind as the user spells it", true, all, "deployment/w", []string{"deployment/web", "deployment/worker"}, false},
		{"statefulsets", true, all, "sts/", []string{"sts/db"}, false},
		{"pods", true, all, "po/", []string{"po/web-1"}, false},
		{"a kind the command does not take", true, []string{"svc", "deploy"}, "sts/", nil, false},
		{"an unknown kind", true, all, "cm/", nil, false},
		{"only Services", true, nil, "", []string{"api", "web"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, d := targets(client, "shop", c.bare, c.kinds, c.toComplete)
			if !slices.Equal(got, c.want) {
				t.Errorf("targets(%q) = %q, want %q", c.toComplete, got, c.want)
			}
			if d&cobra.ShellCompDirectiveNoFileComp == 0 {
				t.Errorf("directive %v completes files", d)
			}
			if noSpace := d&cobra.ShellCompDirectiveNoSpace != 0; noSpace != c.noSpace {
				t.Errorf("no space after %q: %v, want %v", got, noSpace, c.noSpace)
			}
		})
	}
}

// The krew manifest's caveats give the same line as the completion command's help.
func TestKrewCaveatsLinkTheCompletionHook(t *testing.T) {
	for _, f := range []string{"../../../plugins/krew.yaml", "../../../hack/krew-manifest.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), KrewLinkLine) {
			t.Errorf("%s does not carry the line that links kubectl_complete-kt:\n%s", f, KrewLinkLine)
		}
	}
}
