package netadmin

import (
	"strings"
	"testing"
)

func TestCheckPaths(t *testing.T) {
	if err := CheckPaths("/etc/resolv.conf", "/etc/hosts", ""); err != nil {
		t.Errorf("the system files: %v", err)
	}
	err := CheckPaths("/etc/resolv.conf", "/etc/shadow")
	if err == nil || !strings.Contains(err.Error(), "/etc/shadow") || !strings.Contains(err.Error(), "run it as root") {
		t.Errorf("another file: %v", err)
	}
}
