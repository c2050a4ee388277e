//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

type recorded struct {
	Proto, Method, Path, Truncated string
	Len                            int64
}

// recorder runs testapp record in the laptop netns: every request it gets is a line.
func recorder(t *testing.T, addr string) *proc {
	t.Helper()
	p := startProc(t, "ip", "netns", "exec", laptopNetns, testappBin(t), "record", "-http", addr)
	p.WaitFor("testapp record on", 10*time.Second)
	return p
}

func recordedBy(p *proc, path string) []recorded {
	var out []recorded
	for _, l := range strings.Split(p.Output(), "\n") {
		var r recorded
		if json.Unmarshal([]byte(l), &r) == nil && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func TestMirror(t *testing.T) {
	nothingLeftBehind(t)
	scale(t, "deploy", "web", 2)
	rec := recorder(t, "127.0.0.1:8080")
	m := startKt(t, "-n", testNamespace, "mirror", "web", "--expose", "8080:80", "--shadow-expire-after", "20s")
	m.WaitFor("Mirroring service", 90*time.Second)

	// Every request is answered by the original pods, and a copy of each reaches the laptop.
	if got := fromPod(t, "http://web/one").Stdout; !strings.Contains(got, "echo from web-") {
		t.Errorf("answered by %q, want the original pods", got)
	}
	lr := podLoad(t, "http://web/load", "-n", "500", "-c", "4")
	if lr.Errors != 0 {
		t.Fatalf("%d failed requests while mirroring", lr.Errors)
	}
	eventually(t, 10*time.Second, "the copies reach the laptop", func() error {
		if n := len(recordedBy(rec, "/load")); n < 500 {
			return fmt.Errorf("%d of 500 copies", n)
		}
		return nil
	})
	if n := len(recordedBy(rec, "/one")); n != 1 {
		t.Errorf("%d copies of /one, want 1", n)
	}
	up := podLoad(t, "http://web/sink", "-n", "3", "-upload", "2000000")
	if up.Errors != 0 {
		t.Fatalf("uploads failed: %+v", up)
	}
	eventually(t, 10*time.Second, "the uploads' copies, cut at 1 MiB", func() error {
		got := recordedBy(rec, "/sink")
		if len(got) != 3 || got[0].Len != 1<<20 || got[0].Truncated == "" { // chunked uploads: "unknown"
			return fmt.Errorf("%+v", got)
		}
		return nil
	})

	// The local server stopped under load: the originals neither fail nor wait.
	done := make(chan loadResult, 1)
	go func() { done <- podLoad(t, "http://web/gone", "-n", "2000", "-c", "4") }()
	time.Sleep(300 * time.Millisecond)
	rec.Stop(syscall.SIGTERM, 10*time.Second)
	lr = <-done
	if lr.Errors != 0 || lr.Max > 1000 {
		t.Errorf("with the laptop's server gone: %d errors, slowest %.0f ms (want 0 and under a second)", lr.Errors, lr.Max)
	}

	if code := m.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mirror exited %d:\n%s", code, m.Output())
	}
	if !strings.Contains(m.Output(), "Restored service") {
		t.Errorf("mirror did not restore the service:\n%s", m.Output())
	}
}
