package dns

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// The reflector's errors (HandleError logs them with Error, which no verbosity holds back)
// reach the user only at -v 3, as notes.
func TestQuietTurnsErrorsIntoNotes(t *testing.T) {
	for _, v := range []int{0, 2, 3, 6} {
		var lines []string
		l := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: v})
		ctx := quiet(logr.NewContext(context.Background(), l))
		klog.FromContext(ctx).WithName("UnhandledError").Error(errors.New("forbidden"), "Failed to watch")
		klog.FromContext(ctx).V(1).Info("watch closed") // -v 4 now
		switch {
		case v < 3 && len(lines) != 0:
			t.Errorf("-v %d: %q, want nothing", v, lines)
		case v == 3 && (len(lines) != 1 || !strings.Contains(lines[0], `"err"="forbidden"`) || strings.Contains(lines[0], `"error"`)):
			t.Errorf("-v %d: %q, want the error alone, as a note", v, lines)
		case v == 6 && len(lines) != 2:
			t.Errorf("-v %d: %q, want the error and the note", v, lines)
		}
	}
}
