package cmd

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kubectl-kt/kt/pkg/cmd/usage"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// ExitCode prints err once, as one line, and maps it to the process exit code. A run ended by
// Ctrl-C after a clean teardown returns no error and so exits 0. A usage error points at the
// help of the command that failed, cmdPath (e.g. "kubectl kt exchange"; empty: the root).
func ExitCode(err error, errOut io.Writer, cmdPath string) int {
	if err == nil {
		return ExitOK
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	var st *usage.ExitStatus
	if errors.As(err, &st) {
		if err == error(st) {
			return st.Code
		}
		fmt.Fprintf(errOut, "error: %s\n", msg) // the process's status, and what kt failed to undo
		return max(st.Code, ExitFailure)
	}
	var ue *usage.Error
	if errors.As(err, &ue) || isCobraUsage(err) {
		if cmdPath == "" {
			cmdPath = "kubectl kt"
		}
		if !strings.Contains(msg, "--help") {
			msg += "; see '" + cmdPath + " --help'"
		}
		fmt.Fprintf(errOut, "error: %s\n", msg)
		return ExitUsage
	}
	fmt.Fprintf(errOut, "error: %s\n", msg)
	return ExitFailure
}

// isCobraUsage recognises the errors cobra makes itself for unknown commands and bad args.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
