package version

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

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
			t.Errorf("-o %q: %v", tc.output, err)
		} else if err != nil && !strings.Contains(err.Error(), "use json or yaml") {
			t.Errorf("-o %q: %v does not say what to use", tc.output, err)
		}
	}
}

func TestRun(t *testing.T) {
	var out, errOut bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{Out: &out, ErrOut: &errOut})
	o.Output = "json"
	o.ServerVersion = func(context.Context) (string, error) { return "v1.34.1", nil }
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || info.ServerVersion != "v1.34.1" || info.ProtocolVersion != wire.ProtocolVersion || info.ShadowImage == "" {
		t.Errorf("json: %+v, %v", info, err)
	}

	out.Reset()
	o.Output = ""
	o.ServerVersion = func(context.Context) (string, error) { return "", errors.New("connection refused") }
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Client Version:") || strings.Contains(out.String(), "Server Version") || !strings.Contains(errOut.String(), "cannot reach the cluster: connection refused") {
		t.Errorf("unreachable server:\n%s\n%s", out.String(), errOut.String())
	}

	out.Reset()
	o.ClientOnly, o.ServerVersion = true, nil
	if err := o.Run(context.Background()); err != nil || strings.Contains(out.String(), "Server") {
		t.Errorf("--client: %v\n%s", err, out.String())
	}
}
