package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPipeGetsPlainLinesWithElapsedTime(t *testing.T) {
	old := Interval
	Interval = 30 * time.Millisecond
	defer func() { Interval = old }()
	var b syncBuf
	p := start(&b, "Waiting for shadow pod ns/x to run", false, time.Now)
	time.Sleep(100 * time.Millisecond)
	p.Stop()
	out := b.String()
	if strings.Contains(out, "\r") || strings.Contains(out, "\033") {
		t.Errorf("escape codes in a pipe: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "Waiting for shadow pod ns/x to run..." {
		t.Errorf("first line %q", lines[0])
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "still waiting for shadow pod ns/x to run (") || !strings.HasSuffix(lines[1], "s)") {
		t.Errorf("want 'still …' lines with the elapsed time, got %q", out)
	}
}

func TestTerminalGetsASpinnerRedrawnInPlaceAndCleared(t *testing.T) {
	var b syncBuf
	p := start(&b, "Waiting for endpoints", true, time.Now)
	time.Sleep(250 * time.Millisecond)
	p.Stop()
	out := b.String()
	if strings.Contains(out, "\n") {
		t.Errorf("a spinner must not scroll: %q", out)
	}
	if strings.Count(out, "\r\033[K") < 3 || !strings.Contains(out, "Waiting for endpoints (0.") {
		t.Errorf("want a redrawn line with the elapsed time: %q", out)
	}
	if !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("the line is not cleared at the end: %q", out)
	}
}

func TestQuickWaitInAPipePrintsOneLine(t *testing.T) {
	var b syncBuf
	start(&b, "Waiting", false, time.Now).Stop()
	if got := b.String(); got != "Waiting...\n" {
		t.Errorf("got %q", got)
	}
}
