package agent

import (
	"testing"
	"time"
)

func TestActivity(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewActivity(func() time.Time { return now })
	now = now.Add(5 * time.Second)
	if got := a.Idle(); got != 5*time.Second {
		t.Fatalf("idle from start = %s", got)
	}
	end1 := a.Begin()
	end2 := a.Begin()
	now = now.Add(time.Minute)
	if a.Idle() != 0 || a.Active() != 2 {
		t.Fatalf("with two connections: idle %s active %d", a.Idle(), a.Active())
	}
	end1()
	end1() // idempotent
	if a.Active() != 1 || a.Idle() != 0 {
		t.Fatalf("after one end: active %d idle %s", a.Active(), a.Idle())
	}
	end2()
	now = now.Add(3 * time.Second)
	if got := a.Idle(); got != 3*time.Second {
		t.Fatalf("idle after the last end = %s", got)
	}
}
