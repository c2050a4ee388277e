package mesh

import "testing"

func TestParseVersionMark(t *testing.T) {
	for _, c := range []struct {
		in, key, value string
		ok             bool
	}{
		{"", "version", "", true},
		{"dev1", "version", "dev1", true},
		{"x-dev:two", "x-dev", "two", true},
		{"canary:", "canary", "", true},
		{":v2", "version", "v2", true},
		{"X-Dev:alice", "x-dev", "alice", true}, // a header name: any case, kept lower
		{"x.dev:x", "", "", false},
		{"version:a b", "", "", false},
		{"1abc:x", "", "", false},
	} {
		k, v, err := ParseVersionMark(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if !c.ok {
			continue
		}
		if k != c.key || (c.value != "" && v != c.value) || len(v) == 0 {
			t.Errorf("%q: got %q:%q, want %q:%q", c.in, k, v, c.key, c.value)
		}
	}
	_, a, _ := ParseVersionMark("")
	_, b, _ := ParseVersionMark("")
	if a == b || len(a) != 5 {
		t.Errorf("default values %q and %q: want five random letters each time", a, b)
	}
}

// A shadow that takes over says what comes here again: a mirror's copies, not a header that
// it may not have.
func TestComesAgain(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Key: "version", Value: "dev1"}, "requests with header 'version: dev1' come here again"},
		{Config{Mirror: true}, "a copy of every request comes here again"},
		{Config{Mirror: true, Key: "x-dev", Value: "two", PathPrefix: "/m/"}, "a copy of every request with header 'x-dev: two' under /m/ comes here again"},
	} {
		if got := (&mesher{cfg: c.cfg}).comesAgain(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.cfg, got, c.want)
		}
	}
}
