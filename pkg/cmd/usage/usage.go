// Package usage marks errors in what the user typed, which exit with code 2.
package usage

import "fmt"

// Error is an error in the command line: a bad flag value, a missing argument.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf formats a usage error.
func Errorf(format string, a ...any) error { return &Error{Err: fmt.Errorf(format, a...)} }

// Wrap marks err, when not nil, as a usage error.
func Wrap(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err}
}

// ExitStatus ends kt with Code and no message of its own: kubectl kt run passes on its
// process's exit status this way (128+N for a signal N).
type ExitStatus struct{ Code int }

func (e *ExitStatus) Error() string { return fmt.Sprintf("the process exited with status %d", e.Code) }
