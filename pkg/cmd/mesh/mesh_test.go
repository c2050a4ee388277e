package mesh

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(o *Options)
		want string // "" valid; else a part of the error
	}{
		{"defaults with --expose", func(o *Options) {}, ""},
		{"a mark", func(o *Options) { o.VersionMark = "version:dev1" }, ""},
		{"a value only", func(o *Options) { o.VersionMark = "dev1" }, ""},
		{"manual mode", func(o *Options) { o.Mode = "manual" }, ""},
		{"no --expose", func(o *Options) { o.Expose = "" }, "--expose"},
		{"an unknown mode", func(o *Options) { o.Mode = "istio" }, `--mode "istio"`},
		{"an upper-case header (header names have no case)", func(o *Options) { o.VersionMark = "Version:dev1" }, ""},
		{"a header name with a dot", func(o *Options) { o.VersionMark = "x.dev:dev1" }, "header name"},
		{"a value with a space", func(o *Options) { o.VersionMark = "version:dev 1" }, "the value"},
		{"an empty image", func(o *Options) { o.Pod.Image = "" }, "--image"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Expose = "8080:80"
		tc.set(o)
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
		if o.cfg.Expose != nil || o.cfg.Key != "" {
			t.Errorf("%s: Validate changed the options", tc.name)
		}
	}
}

// Complete's part that needs no cluster turns the flags into the run's configuration.
func TestComplete(t *testing.T) {
	o := NewOptions(genericiooptions.IOStreams{})
	o.Expose, o.VersionMark = "8080:80,9090", "X-Dev:alice"
	o.complete("svc/web")
	if o.cfg.Target != "svc/web" || len(o.cfg.Expose) != 2 || o.cfg.Key != "x-dev" || o.cfg.Value != "alice" || o.cfg.Mode != "auto" {
		t.Errorf("cfg: %+v", o.cfg)
	}
}
