package mirror

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    func(*Options)
		errHas string
	}{
		{"expose only", func(o *Options) { o.Expose = "8080:80" }, ""},
		{"mark and prefix", func(o *Options) { o.Expose, o.VersionMark, o.PathPrefix = "8080:80", "tenant:acme", "/api/" }, ""},
		{"no expose", func(*Options) {}, "--expose is required"},
		{"bad expose", func(o *Options) { o.Expose = "x:y" }, "expose"},
		{"mark without a value", func(o *Options) { o.Expose, o.VersionMark = "8080", "tenant:" }, "give KEY:VALUE"},
		{"mark without a key", func(o *Options) { o.Expose, o.VersionMark = "8080", "acme" }, "give KEY:VALUE"},
		{"upper-case key: a header name, any case", func(o *Options) { o.Expose, o.VersionMark = "8080", "Tenant:acme" }, ""},
		{"a key that is no header name", func(o *Options) { o.Expose, o.VersionMark = "8080", "ten ant:acme" }, "must be a letter"},
		{"relative prefix", func(o *Options) { o.Expose, o.PathPrefix = "8080", "api" }, "starts with /"},
		{"prefix with a query", func(o *Options) { o.Expose, o.PathPrefix = "8080", "/api?x" }, "no spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions(genericiooptions.NewTestIOStreamsDiscard())
			tc.set(o)
			err := o.Validate()
			if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("Validate() = %v, want an error with %q", err, tc.errHas)
			}
		})
	}
}

func TestPodProxyFlag(t *testing.T) {
	for args, want := range map[string]bool{"": true, "--pod-proxy=false": false} {
		cmd := NewCmdMirror(nil, genericiooptions.NewTestIOStreamsDiscard())
		if args != "" {
			if err := cmd.Flags().Parse([]string{args}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := cmd.Flags().GetBool("pod-proxy")
		if err != nil || got != want {
			t.Errorf("%q: --pod-proxy %v, %v; want %v", args, got, err, want)
		}
	}
}
