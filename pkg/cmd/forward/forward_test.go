package forward

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-kt/kt/pkg/forward"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		target string
		args   []string
		want   []forward.Port
		errHas string
	}{
		{"svc/web", nil, []forward.Port{{}}, ""},
		{"svc/web", []string{"8080:80", "http", "9000:admin"}, []forward.Port{{Local: 8080, Remote: "80"}, {Remote: "http"}, {Local: 9000, Remote: "admin"}}, ""},
		{"db:5432", nil, []forward.Port{{}}, ""},
		{"db:5432", []string{"15432"}, []forward.Port{{Local: 15432}}, ""},
		{"db:5432", []string{"1", "2"}, nil, "takes one LOCAL port at most"},
		{"db:5432", []string{"x"}, nil, `local port "x" is not a number`},
		{"svc/web", []string{"8080:"}, nil, "names no remote port"},
		{"svc/web", []string{"0:80"}, nil, `local port "0" is not a number from 1 to 65535`},
		{"svc/web", []string{"8080:80", "8080:81"}, nil, "local port 8080 is given twice"},
	} {
		got, err := parsePorts(tc.target, tc.args)
		if tc.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("%s %v: got %v, %v; want an error with %q", tc.target, tc.args, got, err, tc.errHas)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %v: got %v, %v; want %v", tc.target, tc.args, got, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		target string
		ports  []string
		image  string
		want   string // "" valid; else a part of the error
	}{
		{"svc/web", []string{"8080:80"}, "img", ""},
		{"svc/web", nil, "img", ""},
		{"db.prod:5432", []string{"15432"}, "img", ""},
		{"svc/web", []string{"0:80"}, "img", "local port"},
		{"svc/web", []string{"8080:"}, "img", "no remote port"},
		{"db.prod:5432", []string{"1", "2"}, "img", "one LOCAL port"},
		{"svc/web", []string{"8080:80"}, "", "--image"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Target, o.Ports, o.Pod.Image = tc.target, tc.ports, tc.image
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %v: %v", tc.target, tc.ports, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %v: %v, want an error about %s", tc.target, tc.ports, err, tc.want)
		}
		if o.cfg.Ports != nil {
			t.Errorf("%s %v: Validate changed the options", tc.target, tc.ports)
		}
	}
}
