// Package progress shows a wait with its elapsed time: a spinner on a terminal, redrawn in
// place, and plain lines in a pipe or log (one at the start, one every few seconds after).
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

var frames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Interval between plain lines in a pipe; a wait shorter than that prints just its first line.
var Interval = 5 * time.Second

// Wait is one wait being shown.
type Wait struct {
	w     io.Writer
	what  string
	tty   bool
	start time.Time
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Start shows "what" until Stop.
func Start(w io.Writer, what string) *Wait {
	return start(w, what, IsTerminal(w), time.Now)
}

func start(w io.Writer, what string, tty bool, now func() time.Time) *Wait {
	p := &Wait{w: w, what: what, tty: tty, start: now(), stop: make(chan struct{})}
	if w == nil || w == io.Discard {
		return p
	}
	if !tty {
		fmt.Fprintf(w, "%s...\n", what)
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := 100 * time.Millisecond
		if !tty {
			tick = Interval
		}
		t := time.NewTicker(tick)
		defer t.Stop()
		for i := 0; ; i++ {
			if tty {
				fmt.Fprintf(w, "\r\033[K%s %s (%s)", frames[i%len(frames)], what, elapsed(now().Sub(p.start)))
			}
			select {
			case <-p.stop:
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				if !tty {
					fmt.Fprintf(w, "still %s (%s)\n", lower(what), elapsed(now().Sub(p.start)))
				}
			}
		}
	}()
	return p
}

// Stop ends the display (a terminal's line is cleared) and returns the time waited.
func (p *Wait) Stop() time.Duration {
	p.once.Do(func() { close(p.stop) })
	p.done.Wait()
	return time.Since(p.start)
}

func elapsed(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func lower(s string) string {
	if s != "" && s[0] >= 'A' && s[0] <= 'Z' {
		return string(s[0]+'a'-'A') + s[1:]
	}
	return s
}
