//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/portforward"
	"github.com/kubectl-kt/kt/pkg/session"
	"github.com/kubectl-kt/kt/pkg/wire"
)

// agentRSS finds the agent process of pod on this node and returns its resident set in KiB.
func agentRSS(t testing.TB, pod string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(p + "/environ")
		if err != nil || !bytes.Contains(env, []byte("HOSTNAME="+pod+"\x00")) {
			continue
		}
		cmd, _ := os.ReadFile(p + "/cmdline")
		if !bytes.HasPrefix(cmd, []byte("/shadow")) {
			continue
		}
		status, _ := os.ReadFile(p + "/status")
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				return kb
			}
		}
	}
	t.Fatalf("no agent process for pod %s on this node", pod)
	return 0
}

// BenchmarkAgent measures the shadow: time from pod creation to a usable agent (SSH over the
// port-forward answered) with the image present, the agent's idle RSS, and the image size.
func BenchmarkAgent(b *testing.B) {
	ctx := context.Background()
	var total time.Duration
	var rss int
	for i := 0; i < 5; i++ {
		opts := cluster.NewPodOptions()
		opts.Image = envOr("KT_IMAGE", opts.Image)
		t0 := time.Now()
		s, err := session.Start(ctx, restConfig, client, session.Options{Namespace: testNamespace, Role: wire.RoleConnect, Pod: opts, Protocol: portforward.ProtocolAuto})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
		time.Sleep(2 * time.Second)
		rss = max(rss, agentRSS(b, s.Pod.Name))
		s.Close()
	}
	b.ReportMetric(float64(total.Milliseconds())/5, "ms-create-to-ready")
	b.ReportMetric(float64(rss)/1024, "agent-idle-RSS-MiB")
	if fi, err := os.Stat("../../dist/images/shadow-amd64.tar"); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "image-MiB")
	}
}
