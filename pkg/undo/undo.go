// Package undo is a stack of the inverses of the changes a command made, run on exit.
package undo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Stack holds the inverses of the changes made so far. Run applies them last-in-first-out
// with a fresh, bounded context, so teardown works after the command's context is canceled.
type Stack struct {
	mu    sync.Mutex
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func(context.Context) error
}

// Push records the inverse of a change just made.
func (u *Stack) Push(what string, fn func(context.Context) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.steps = append(u.steps, undoStep{what, fn})
}

// Run applies every inverse, newest first, and empties the stack. It returns all errors joined.
func (u *Stack) Run(timeout time.Duration) error {
	u.mu.Lock()
	steps := u.steps
	u.steps = nil
	u.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		klog.FromContext(ctx).V(1).Info("undo", "step", s.what)
		if err := s.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.what, err))
		}
	}
	return errors.Join(errs...)
}

// TakeFrom moves every inverse pending in from onto u (a session handing its teardown over).
func (u *Stack) TakeFrom(from *Stack) {
	from.mu.Lock()
	steps := from.steps
	from.steps = nil
	from.mu.Unlock()
	u.mu.Lock()
	u.steps = append(u.steps, steps...)
	u.mu.Unlock()
}

// Len reports how many inverses are pending.
func (u *Stack) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.steps)
}
