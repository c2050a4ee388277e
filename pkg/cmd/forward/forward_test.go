package forward

import (
	"reflect"
	"strings"
	"testing"

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
