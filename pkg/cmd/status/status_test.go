package status

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-kt/kt/pkg/connect"
	"github.com/kubectl-kt/kt/pkg/inventory"
	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		output string
		ok     bool
	}{{"", true}, {"json", true}, {"yaml", true}, {"wide", false}, {"JSON", false}} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Output = tc.output
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("--output %q: %v", tc.output, err)
		}
	}
}

func options(out *bytes.Buffer) *Options {
	o := NewOptions(genericiooptions.IOStreams{Out: out, ErrOut: out})
	o.local = func() ([]connect.State, []connect.State, error) { return nil, nil, nil }
	return o
}

// status used to drop every error: no kubeconfig, a refused list, an unreadable state
// directory all printed a report that looked complete, with exit code 0.
func TestRunReportsWhatItCouldNotRead(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	o := options(&out)
	o.client = fake.NewClientset()
	if err := o.Run(ctx); err != nil || !strings.Contains(out.String(), "connect:  not running") {
		t.Fatalf("a reachable, empty cluster: %v\n%s", err, out.String())
	}

	out.Reset()
	o = options(&out)
	o.clientErr = errors.New("no configuration has been provided")
	if err := o.Run(ctx); err == nil || !strings.Contains(err.Error(), "no configuration") || !strings.Contains(out.String(), "cluster:") {
		t.Errorf("no kubeconfig: %v\n%s", err, out.String())
	}

	out.Reset()
	o = options(&out)
	c := fake.NewClientset()
	c.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("services is forbidden")
	})
	o.client = c
	if err := o.Run(ctx); err == nil || !strings.Contains(err.Error(), "services is forbidden") {
		t.Errorf("a refused list: %v\n%s", err, out.String())
	}

	out.Reset()
	o = options(&out)
	o.client = fake.NewClientset()
	o.local = func() ([]connect.State, []connect.State, error) {
		return nil, nil, errors.New("state directory is a symlink")
	}
	o.Output = "json"
	if err := o.Run(ctx); err == nil || !strings.Contains(out.String(), `"localError": "state directory is a symlink"`) {
		t.Errorf("an unreadable state directory: %v\n%s", err, out.String())
	}
}

// A router stamps no heartbeat: status said "heartbeat 40m ago" of a live one, as if it were
// left behind.
func TestPrintARouterWithoutItsHeartbeat(t *testing.T) {
	var out bytes.Buffer
	o := options(&out)
	old := time.Now().Add(-40 * time.Minute)
	rep := Report{Sessions: []inventory.ShadowInfo{
		{Namespace: "ns", Pod: "kt-router-a", Role: wire.RoleRouter, Phase: "Running", Heartbeat: old},
		{Namespace: "ns", Pod: "kt-mesh-b", Role: wire.RoleMesh, Phase: "Running", Heartbeat: time.Now().Add(-3 * time.Second)},
	}}
	if err := o.print(rep); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Contains(got, "40m") || !strings.Contains(got, "router, Running, shared by the Service's meshes and mirrors") || !strings.Contains(got, "mesh, Running, heartbeat 3s ago") {
		t.Errorf("status:\n%s", got)
	}
}
