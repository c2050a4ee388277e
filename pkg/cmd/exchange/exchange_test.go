package exchange

import (
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(o *Options)
		want string // "" valid; else a part of the error
	}{
		{"defaults with --expose", func(o *Options) {}, ""},
		{"scale mode", func(o *Options) { o.Mode = "scale" }, ""},
		{"several ports by name", func(o *Options) { o.Expose = "8080:http,9090" }, ""},
		{"no --expose", func(o *Options) { o.Expose = "" }, "--expose"},
		{"a local port out of range", func(o *Options) { o.Expose = "70000:80" }, "70000"},
		{"ephemeral mode", func(o *Options) { o.Mode = "ephemeral" }, "not offered"},
		{"an unknown mode", func(o *Options) { o.Mode = "swap" }, `--mode "swap"`},
		{"a negative wait", func(o *Options) { o.RecoverWaitTime = -time.Second }, "--recover-wait-time"},
		{"an empty image", func(o *Options) { o.Pod.Image = "" }, "--image"},
		{"no fallback", func(o *Options) { o.Pod.FallbackAfter = 0 }, ""},
		{"a fallback", func(o *Options) { o.Pod.FallbackAfter = 10 * time.Second }, ""},
		{"a fallback too short", func(o *Options) { o.Pod.FallbackAfter = time.Second }, "--fallback-after 1s"},
		{"a fallback no shorter than the expiry", func(o *Options) { o.Pod.FallbackAfter = o.Pod.ExpireAfter }, "less than --shadow-expire-after"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Expose = "8080:80"
		tc.set(o)
		before := *o
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
		if o.cfg.Expose != nil || o.Expose != before.Expose || o.Mode != before.Mode {
			t.Errorf("%s: Validate changed the options", tc.name)
		}
	}
}
