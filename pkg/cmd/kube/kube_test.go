package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubectl-kt/kt/pkg/cluster"
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

// TestFallbackFlag: the default fallback fits a short expiry; a given one is kept as given,
// for ValidateFallback to refuse if it does not fit.
func TestFallbackFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
		err  string
	}{
		{nil, 10 * time.Second, ""},
		{[]string{"--shadow-expire-after", "10s"}, 5 * time.Second, ""},
		{[]string{"--shadow-expire-after", "15"}, 7500 * time.Millisecond, ""},
		{[]string{"--fallback-after", "0"}, 0, ""},
		{[]string{"--fallback-after", "4s", "--shadow-expire-after", "10s"}, 4 * time.Second, ""},
		{[]string{"--fallback-after", "10s", "--shadow-expire-after", "10s"}, 10 * time.Second, "less than --shadow-expire-after"},
		{[]string{"--fallback-after", "2s"}, 2 * time.Second, "from 3s"},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		o := cluster.NewPodOptions()
		AddPodFlags(fs, o)
		AddFallbackFlag(fs, o)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		o.CompleteFallback()
		err := o.ValidateFallback()
		if o.FallbackAfter != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: fallback %s, %v; want %s, %q", tc.args, o.FallbackAfter, err, tc.want, tc.err)
		}
	}
}
