package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"exchange web --expose 8080:80", "exchange web --expose 8080:80"},
		{"--token s3cret connect", "--token=REDACTED connect"},
		{"connect --token=s3cret -n dev", "connect --token=REDACTED -n dev"},
		{"--username admin --password=hunter2 connect", "--username=REDACTED --password=REDACTED connect"},
		{"--client-key /home/me/.kube/key.pem connect", "--client-key=REDACTED connect"},
		{"connect --token", "connect --token=REDACTED"},
		{"run deploy/web -- app --token local", "run deploy/web -- app --token local"},
		{"connect --tokens x", "connect --tokens x"},
	} {
		if got := strings.Join(Redact(strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDurationVar(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var d time.Duration
	DurationVar(fs, &d, "timeout", 5*time.Second, "")
	if d != 5*time.Second {
		t.Errorf("default %s", d)
	}
	for in, want := range map[string]time.Duration{"60": time.Minute, "1.5": 1500 * time.Millisecond, "2m": 2 * time.Minute} {
		if err := fs.Set("timeout", in); err != nil || d != want {
			t.Errorf("--timeout %s: %s, %v; want %s", in, d, err, want)
		}
	}
	if err := fs.Set("timeout", "soon"); err == nil {
		t.Error("--timeout soon was taken")
	}
}
