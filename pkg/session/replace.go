package session

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Replace starts a shadow in place of the lost pod with start, trying again after a growing
// delay until one runs; it returns ctx's error once ctx ends.
func Replace[S any](ctx context.Context, w io.Writer, lostPod string, start func() (S, error)) (S, error) {
	var none S
	fmt.Fprintf(w, "Lost the shadow pod %s; starting a new one\n", lostPod)
	for delay := 500 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		sess, err := start()
		if err == nil {
			return sess, nil
		}
		if ctx.Err() != nil {
			return none, ctx.Err()
		}
		fmt.Fprintf(w, "warning: new shadow failed: %v; retrying in %s\n", err, delay)
		select {
		case <-ctx.Done():
			return none, ctx.Err()
		case <-time.After(delay):
		}
	}
}
