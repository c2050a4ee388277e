package netadmin

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		socket string
		uid    int
		want   string // "" valid; else a part of the error
	}{
		{"/run/user/1000/kt/helper.sock", 1000, ""},
		{"/tmp/kt.sock", 0, ""},
		{"", 1000, "--socket"},
		{"relative.sock", 1000, "absolute path"},
		{"/tmp/kt.sock", -1, "--uid"},
	} {
		o := NewOptions(genericiooptions.IOStreams{})
		o.Socket, o.UID = tc.socket, tc.uid
		err := o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q %d: %v", tc.socket, tc.uid, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q %d: %v, want an error about %s", tc.socket, tc.uid, err, tc.want)
		}
	}
	if NewOptions(genericiooptions.IOStreams{}).Validate() == nil {
		t.Error("the defaults (no socket, no uid) are taken")
	}
}
