// Command kubectl-kt is the kubectl kt plugin.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/cmd"
	"github.com/kubectl-kt/kt/pkg/cmd/kube"
)

func main() {
	kube.StreamInformerLists()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	c, err := cmd.NewKtCommand(streams).ExecuteContextC(ctx)
	stop()
	klog.Flush()
	path := ""
	if c != nil {
		path = c.CommandPath()
	}
	os.Exit(cmd.ExitCode(err, streams.ErrOut, path))
}
