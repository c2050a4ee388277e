//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// load is an in-cluster caller that requests a URL every 200 ms (2 s timeout each) and
// records, per request, the second it ended and what answered.
type load struct {
	p                *proc
	laptop, original string // substrings of the laptop's and the original pods' answers
}

func startLoad(t *testing.T, header, url, laptop, original string, seconds int) *load {
	t.Helper()
	h := ""
	if header != "" {
		h = "--header '" + header + "' "
	}
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d )); while [ $(date +%%s) -lt $end ]; do r=$(timeout 2 wget -qO- %s'%s' 2>/dev/null | head -c 60 | tr -d '\n'); echo "$(date +%%s) ${r:-FAIL}"; sleep 0.2; done`, seconds, h, url)
	p := startProc(t, "kubectl", "--kubeconfig", hostKubeconfig, "exec", "-n", testNamespace, clientPodName, "--", "sh", "-c", script)
	return &load{p: p, laptop: laptop, original: original}
}

type sample struct {
	at   int64
	kind string // laptop, original, fail
}

func (l *load) samples() []sample {
	var out []sample
	for _, line := range strings.Split(l.p.Output(), "\n") {
		ts, rest, ok := strings.Cut(line, " ")
		at, err := strconv.ParseInt(ts, 10, 64)
		if !ok || err != nil {
			continue
		}
		kind := "fail"
		switch {
		case strings.Contains(rest, l.laptop):
			kind = "laptop"
		case strings.Contains(rest, l.original):
			kind = "original"
		}
		out = append(out, sample{at, kind})
	}
	return out
}

// first waits until a request that ended at or after since was answered by kind, and returns
// when that was.
func (l *load) first(t *testing.T, kind string, since int64, timeout time.Duration) int64 {
	t.Helper()
	var at int64
	eventually(t, timeout, "a request answered by the "+kind+" after "+time.Unix(since, 0).Format(time.TimeOnly), func() error {
		for _, s := range l.samples() {
			if s.at >= since && s.kind == kind {
				at = s.at
				return nil
			}
		}
		return fmt.Errorf("none yet; the load printed:\n%s", tail(l.p.Output(), 10))
	})
	return at
}

// count counts the requests of kind that ended in [from, to].
func (l *load) count(kind string, from, to int64) int {
	n := 0
	for _, s := range l.samples() {
		if s.at >= from && s.at <= to && s.kind == kind {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestFallbackWhileTheLaptopIsAway: an exchange (of web) and a mesh (of multi) run under an
// in-cluster caller's load each when the laptop's network goes quiet.
//   - Away for 18 s, shorter than the shadows' 30 s expiry: within about 12 s (the 10 s
//     --fallback-after and a keepalive) the callers are answered by the original pods, and
//     fail only until then; when the network is back, their requests reach the laptop again
//     by themselves, through the same shadows; the shadow logs paused and resumed, and the
//     client says how long its traffic went to the original pods.
//   - Away past the expiry: the callers get the original pods again, the shadows restore
//     the Services and go (with the exchange's origin Service); back online, the exchange says
//     and the mesh say their session ended and exit non-zero, and nothing of kt is left.
func TestFallbackWhileTheLaptopIsAway(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-away", "127.0.0.1:18093")
	x := startKt(t, "-n", testNamespace, "exchange", "web", "--expose", "18093:80", "--shadow-expire-after", "30s", "--fallback-after", "10s")
	x.WaitFor("Exchanged service", 60*time.Second)
	m := startKt(t, "-n", testNamespace, "mesh", "multi", "--expose", "18093:80", "--version-mark", "version:away", "--shadow-expire-after", "30s", "--fallback-after", "10s")
	m.WaitFor("Meshed service", 90*time.Second)
	eventuallyFromPod(t, "http://web."+testNamespace+"/", "laptop-away")
	shadows := append(shadowsOf(t, wire.RoleExchange), shadowsOf(t, wire.RoleMesh)...)
	web := startLoad(t, "", "http://web."+testNamespace+"/", "laptop-away", "echo from web-", 150)
	marked := startLoad(t, "version: away", "http://multi."+testNamespace+"/", "laptop-away", "echo from multi-", 150)
	start := time.Now().Unix()
	web.first(t, "laptop", start, 20*time.Second)
	marked.first(t, "laptop", start, 20*time.Second)

	// Away within the expiry.
	back := cutLaptop(t)
	cut := time.Now().Unix()
	for name, l := range map[string]*load{"web": web, "marked multi": marked} {
		at := l.first(t, "original", cut, 30*time.Second)
		t.Logf("%s: the original pods answer %ds after the laptop went away; %d requests failed meanwhile", name, at-cut, l.count("fail", cut, at))
		if at-cut > 14 {
			t.Errorf("%s: the callers waited %ds for the original pods, want about 12s", name, at-cut)
		}
	}
	time.Sleep(time.Until(time.Unix(cut+18, 0)))
	paused := time.Now().Unix()
	back()
	for name, l := range map[string]*load{"web": web, "marked multi": marked} {
		at := l.first(t, "laptop", paused+1, 40*time.Second)
		t.Logf("%s: requests reach the laptop again %ds after it is back", name, at-paused)
		if n := l.count("fail", cut+14, paused); n > 0 {
			t.Errorf("%s: %d requests failed while the shadow sent them to the original pods", name, n)
		}
	}
	x.WaitFor("Resumed:", 30*time.Second)
	m.WaitFor("Resumed:", 30*time.Second)
	if got := append(shadowsOf(t, wire.RoleExchange), shadowsOf(t, wire.RoleMesh)...); strings.Join(got, " ") != strings.Join(shadows, " ") {
		t.Errorf("shadows %v after the absence, want the same %v", got, shadows)
	}
	agentSaid := kubectl(t, "-n", testNamespace, "logs", shadows[0])
	if !strings.Contains(agentSaid.Stdout+agentSaid.Stderr, "paused") || !strings.Contains(agentSaid.Stdout+agentSaid.Stderr, "resumed") {
		t.Errorf("the exchange's shadow did not log paused and resumed:\n%s", agentSaid)
	}

	// Away past the expiry.
	back = cutLaptop(t)
	cut = time.Now().Unix()
	web.first(t, "original", cut, 30*time.Second)
	marked.first(t, "original", cut, 30*time.Second)
	eventually(t, 90*time.Second, "the shadows restore web and multi and go", func() error {
		for _, name := range []string{"web", "multi"} {
			svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if _, locked := wire.ServiceLock(svc); locked {
				return fmt.Errorf("service %s is still locked", name)
			}
		}
		// The exchange's shadow deletes itself; the mesh's (which has no identity) ends.
		pods, err := client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.ManagedByLabel + "=" + wire.ManagedBy})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == "Running" && p.DeletionTimestamp == nil {
				return fmt.Errorf("shadow %s still runs", p.Name)
			}
		}
		return nil
	})
	expired := time.Now().Unix()
	t.Logf("the shadows restored the Services %ds after the laptop went away", expired-cut)
	eventually(t, 30*time.Second, "the origin Services go with the shadows", func() error {
		svcs, err := client.CoreV1().Services(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: wire.RoleLabel + "=origin"})
		if err != nil {
			return err
		}
		for _, s := range svcs.Items {
			if s.DeletionTimestamp == nil {
				return fmt.Errorf("origin Service %s remains", s.Name)
			}
		}
		return nil
	})
	back()
	select {
	case <-x.done:
	case <-time.After(90 * time.Second):
		t.Errorf("the exchange did not end within 90s of the laptop coming back:\n%s", x.Output())
	}
	if code := x.Stop(syscall.SIGINT, 60*time.Second); code == 0 || !strings.Contains(x.Output(), "ended") {
		t.Errorf("the exchange after its shadow expired: exit %d, want non-zero and a word that it ended:\n%s", code, x.Output())
	}
	select {
	case <-m.done:
	case <-time.After(90 * time.Second):
		t.Errorf("the mesh did not end within 90s of the laptop coming back:\n%s", m.Output())
	}
	if code := m.Stop(syscall.SIGINT, 60*time.Second); code == 0 || !strings.Contains(m.Output(), "ended") {
		t.Errorf("the mesh after its router restored the Service: exit %d, want non-zero and a word that it ended:\n%s", code, m.Output())
	}
	if n := web.count("laptop", expired, time.Now().Unix()); n > 0 {
		t.Errorf("web's callers reached the laptop %d times after the exchange had expired", n)
	}
	web.p.Stop(syscall.SIGKILL, 10*time.Second)
	marked.p.Stop(syscall.SIGKILL, 10*time.Second)
}
