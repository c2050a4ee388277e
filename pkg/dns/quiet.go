package dns

import (
	"context"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// quiet is ctx with its logger's errors turned into notes at -v 3, and its notes three
// levels down: the reflector reports through it a list or a watch that failed (the network
// gone, a refusal that Run handles), which the user need not see.
func quiet(ctx context.Context) context.Context {
	l := klog.FromContext(ctx)
	if l.GetSink() == nil {
		return ctx
	}
	return klog.NewContext(ctx, logr.New(quietSink{l.GetSink()}).V(3))
}

type quietSink struct{ logr.LogSink }

func (s quietSink) Error(err error, msg string, kv ...any) {
	if s.Enabled(3) {
		s.LogSink.Info(3, msg, append(kv, "err", err)...)
	}
}

func (s quietSink) WithValues(kv ...any) logr.LogSink { return quietSink{s.LogSink.WithValues(kv...)} }
func (s quietSink) WithName(name string) logr.LogSink { return quietSink{s.LogSink.WithName(name)} }

// Init leaves the shared sink as it is: logr.New would change its call depth under others.
func (s quietSink) Init(logr.RuntimeInfo) {}
