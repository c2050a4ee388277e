package preview

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
		{"a name and a port", func(o *Options) {}, ""},
		{"several ports", func(o *Options) { o.Expose = "8080:80,9090" }, ""},
		{"an upper-case name", func(o *Options) { o.Name = "Web-Dev" }, "service name"},
		{"a name starting with a digit", func(o *Options) { o.Name = "1web" }, "service name"},
		{"no --expose", func(o *Options) { o.Expose = "" }, "--expose"},
		{"a named REMOTE", func(o *Options) { o.Expose = "8080:http" }, "port number"},
		{"a REMOTE out of range", func(o *Options) { o.Expose = "8080:70000" }, "70000"},
		{"an empty image", func(o *Options) { o.Pod.Image = "" }, "--image"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Name, o.Expose = "web-dev", "8080:80"
		tc.set(o)
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

func TestPorts(t *testing.T) {
	p, err := ports("8080:80,9090")
	if err != nil || len(p) != 2 || p[0].Local != 8080 || p[0].Remote != 80 || p[1].Local != 9090 || p[1].Remote != 9090 {
		t.Errorf("ports: %+v, %v", p, err)
	}
}
