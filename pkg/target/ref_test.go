package target

import "testing"

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		ref  string
		kind Kind
		name string
		ok   bool
	}{
		{"web", KindService, "web", true},
		{"svc/web", KindService, "web", true},
		{"Services/web", KindService, "web", true},
		{"deploy/web", KindDeployment, "web", true},
		{"deployments/web", KindDeployment, "web", true},
		{"sts/db", KindStatefulSet, "db", true},
		{"statefulset/db", KindStatefulSet, "db", true},
		{"po/web-1", KindPod, "web-1", true},
		{"pod/web-1", KindPod, "web-1", true},
		{"", "", "", false},
		{"svc/", "", "", false},
		{"job/x", "", "", false},
		{"svc/a/b", "", "", false},
		{"/web", "", "", false},
	} {
		kind, name, ok := ParseRef(tc.ref)
		if kind != tc.kind || name != tc.name || ok != tc.ok {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q, %v", tc.ref, kind, name, ok, tc.kind, tc.name, tc.ok)
		}
	}
}
