//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/cluster"
	"github.com/kubectl-kt/kt/pkg/wire"
)

type recorded struct {
	Proto, Method, Path, Truncated string
	Len                            int64
	Body                           []byte // its first 256 bytes
	At                             int64  // a gRPC message's: when it was read, Unix ns
}

// recorder runs testapp record in the laptop netns: every request it gets is a line.
func recorder(t testing.TB, addr string) *proc {
	t.Helper()
	p := startProc(t, "ip", "netns", "exec", laptopNetns, testappBin(t), "record", "-http", addr)
	p.WaitFor("testapp record on", 10*time.Second)
	return p
}

func recordedBy(p *proc, path string) []recorded {
	var out []recorded
	for _, l := range strings.Split(p.Output(), "\n") {
		var r recorded
		if json.Unmarshal([]byte(l), &r) == nil && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// recordedAs is what recordedBy gives for path, of one proto only.
func recordedAs(p *proc, proto, path string) []recorded {
	var out []recorded
	for _, r := range recordedBy(p, path) {
		if r.Proto == proto {
			out = append(out, r)
		}
	}
	return out
}

var copiesRE = regexp.MustCompile(`mirror of every request[^(]*\(copies: (\d+) sent, (\d+) dropped\)`)

// mirrorCounts reads the copies sent and dropped from kubectl kt status.
func mirrorCounts(t testing.TB) (sent, dropped int64) {
	t.Helper()
	r := kt(t, "-n", testNamespace, "status")
	m := copiesRE.FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Fatalf("status shows no mirror counts:\n%s", r)
	}
	sent, _ = strconv.ParseInt(m[1], 10, 64)
	dropped, _ = strconv.ParseInt(m[2], 10, 64)
	return sent, dropped
}

func TestMirror(t *testing.T) {
	nothingLeftBehind(t)
	scale(t, "deploy", "web", 2)
	rec := recorder(t, "127.0.0.1:8080")
	m := startKt(t, "-n", testNamespace, "mirror", "web", "--expose", "8080:80", "--shadow-expire-after", "20s")
	m.WaitFor("Mirroring service", 90*time.Second)

	// Every request is answered by the original pods, and a copy of each reaches the laptop.
	if got := fromPod(t, "http://web/one").Stdout; !strings.Contains(got, "echo from web-") {
		t.Errorf("answered by %q, want the original pods", got)
	}
	lr := podLoad(t, "http://web/load", "-n", "500", "-c", "4")
	if lr.Errors != 0 {
		t.Fatalf("%d failed requests while mirroring", lr.Errors)
	}
	// Every copy reaches the laptop, or is counted as dropped (the heartbeat carries the
	// counts to status).
	eventually(t, 20*time.Second, "the copies reach the laptop", func() error {
		sent, dropped := mirrorCounts(t)
		n := len(recordedBy(rec, "/load"))
		if n+int(dropped) < 500 || sent < int64(n) {
			return fmt.Errorf("%d of 500 copies recorded; status: %d sent, %d dropped", n, sent, dropped)
		}
		t.Logf("500 requests under load: %d copies recorded, %d dropped", n, dropped)
		return nil
	})
	if n := len(recordedBy(rec, "/one")); n != 1 {
		t.Errorf("%d copies of /one, want 1", n)
	}
	up := podLoad(t, "http://web/sink", "-n", "3", "-upload", "2000000")
	if up.Errors != 0 {
		t.Fatalf("uploads failed: %+v", up)
	}
	eventually(t, 10*time.Second, "the uploads' copies, cut at 1 MiB", func() error {
		got := recordedBy(rec, "/sink")
		if len(got) != 3 || got[0].Len != 1<<20 || got[0].Truncated == "" { // chunked uploads: "unknown"
			return fmt.Errorf("%+v", got)
		}
		return nil
	})

	t.Run("WebSocket", func(t *testing.T) {
		r := inCluster(t, "/testapp wsclient web:80 hello again")
		if strings.Count(r.Stdout, "ws-echo web-") != 2 {
			t.Errorf("a WebSocket through the mirrored Service should be answered by the original pods:\n%s", r)
		}
		eventually(t, 10*time.Second, "the client's messages copied to the laptop", func() error {
			var msgs []string
			for _, c := range recordedBy(rec, "/ws") {
				if c.Proto == "websocket" {
					msgs = append(msgs, string(c.Body))
				}
			}
			if strings.Join(msgs, " ") != "hello again" {
				return fmt.Errorf("messages %q", msgs)
			}
			return nil
		})
	})

	// A connection that is not HTTP passes through to the original pods (a testapp HTTP
	// server, which answers 400 to it), and the client's bytes come to the laptop on a
	// connection of their own. The second is a text protocol whose line starts with an
	// upper-case word and a space, as a request line does (Redis's inline commands): the router
	// took it for HTTP and answered a 400 of its own, without the origin's Content-Type.
	t.Run("PlainTCP", func(t *testing.T) {
		sent := []string{"kt-plain-tcp hello from a pod\n", "SET kt-plain-tcp value\n"}
		for _, line := range sent {
			r := inCluster(t, "/testapp tcpsend web:80 "+strings.TrimSuffix(line, "\n"))
			if !strings.HasPrefix(r.Stdout, "HTTP/1.1 400 Bad Request") || !strings.Contains(r.Stdout, "Content-Type: text/plain") {
				t.Errorf("a plain TCP client (%q) through the mirrored Service should be answered by the original pods:\n%s", line, r)
			}
		}
		eventually(t, 10*time.Second, "the client's bytes copied to the laptop", func() error {
			var got []string
			for _, c := range recordedBy(rec, "") {
				if c.Proto == "tcp" {
					got = append(got, string(c.Body))
				}
			}
			slices.Sort(got)
			if want := slices.Sorted(slices.Values(sent)); !slices.Equal(got, want) {
				return fmt.Errorf("plain TCP copies %q, want %q", got, want)
			}
			return nil
		})
	})

	// The copies came through the API server's pod proxy, whose port on the shadow's IP
	// any pod can reach: one that asks it for the copies gets none.
	if !strings.Contains(m.Output(), "Connections come through the API server's pod proxy") {
		t.Errorf("the copies did not come through the pod proxy:\n%s", m.Output())
	}
	t.Run("a pod cannot take the copies", func(t *testing.T) {
		shadow := shadowPod(t, wire.RoleMesh)
		port := cluster.ProxyPort(&shadow)
		if port == 0 {
			t.Fatalf("the mirror's shadow takes no streams through the pod proxy: %v", shadow.Spec.Containers[0].Env)
		}
		addr := net.JoinHostPort(shadow.Status.PodIP, strconv.Itoa(port))
		for how, want := range map[string]string{"plain": "answer 426 Upgrade Required\nclosed", "guess": "answer 101 Switching Protocols\nclosed"} {
			if r := inCluster(t, "/testapp steal "+addr+" "+how); strings.TrimSpace(r.Stdout) != want {
				t.Errorf("a pod asking for the copies (%s): %s; want %q", how, r, want)
			}
		}
		before := len(recordedBy(rec, "/after-steal"))
		if lr := podLoad(t, "http://web/after-steal", "-n", "50", "-c", "2"); lr.Errors != 0 {
			t.Fatalf("%d failed requests", lr.Errors)
		}
		eventually(t, 10*time.Second, "copies still reach the laptop", func() error {
			if n := len(recordedBy(rec, "/after-steal")) - before; n < 50 {
				return fmt.Errorf("%d of 50 copies", n)
			}
			return nil
		})
	})

	// A deleted shadow is replaced, and the copies come through the new one; the note on
	// their path was said for the first and is not said again.
	t.Run("a deleted shadow is replaced", func(t *testing.T) {
		old := deleteShadow(t, wire.RoleMesh)
		m.WaitFor("took over: a copy of every request comes here again", 60*time.Second)
		if now := shadowPod(t, wire.RoleMesh); now.Name == old {
			t.Fatalf("the shadow was not replaced: %s", old)
		}
		eventually(t, 20*time.Second, "copies through the new shadow", func() error {
			if lr := podLoad(t, "http://web/after-replace", "-n", "20"); lr.Errors != 0 {
				return fmt.Errorf("%d failed requests", lr.Errors)
			}
			if n := len(recordedBy(rec, "/after-replace")); n == 0 {
				return fmt.Errorf("no copy yet")
			}
			return nil
		})
		if n := strings.Count(m.Output(), "Connections come through the API server's pod proxy"); n != 1 {
			t.Errorf("the note on the pod proxy was said %d times, want once:\n%s", n, m.Output())
		}
	})

	// The local server stopped under load: the originals neither fail nor wait.
	done := make(chan loadResult, 1)
	go func() { done <- podLoad(t, "http://web/gone", "-n", "2000", "-c", "4") }()
	time.Sleep(300 * time.Millisecond)
	rec.Stop(syscall.SIGTERM, 10*time.Second)
	lr = <-done
	if lr.Errors != 0 || lr.Max > 1000 {
		t.Errorf("with the laptop's server gone: %d errors, slowest %.0f ms (want 0 and under a second)", lr.Errors, lr.Max)
	}

	if code := m.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mirror exited %d:\n%s", code, m.Output())
	}
	if !strings.Contains(m.Output(), "Restored service") {
		t.Errorf("mirror did not restore the service:\n%s", m.Output())
	}
}

func TestMirrorGRPC(t *testing.T) {
	nothingLeftBehind(t)
	rec := recorder(t, "127.0.0.1:9000")
	m := startKt(t, "-n", testNamespace, "mirror", "grpc", "--expose", "9000", "--shadow-expire-after", "20s")
	m.WaitFor("Mirroring service", 90*time.Second)
	// Unary Check and server-streaming Watch: the cluster's server answers both, and the
	// laptop gets a copy of each call with the client's message.
	r := inCluster(t, "/testapp grpc-check -addr grpc:9000 -service cluster")
	if !strings.Contains(r.Stdout, "check SERVING") || !strings.Contains(r.Stdout, "watch SERVING") {
		t.Errorf("gRPC through the mirrored Service should be answered by the cluster's server:\n%s", r)
	}
	for _, method := range []string{"Check", "Watch"} {
		eventually(t, 10*time.Second, "a copy of the "+method+" call", func() error {
			got := recordedAs(rec, "HTTP/2.0", "/grpc.health.v1.Health/"+method)
			if len(got) != 1 || !strings.Contains(string(got[0].Body), "cluster") {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
	}

	// A bidirectional stream, its messages 2 s apart: the cluster's server answers each, and
	// each message's copy reaches the laptop while the stream lasts, before the next is sent.
	r = inCluster(t, "/testapp grpc-stream -addr grpc:9000 -n 3 -gap 2s")
	sentAt := map[int]int64{}
	replies := 0
	for _, l := range strings.Split(r.Stdout, "\n") {
		var i int
		var at int64
		if _, err := fmt.Sscanf(l, "sent %d %d", &i, &at); err == nil {
			sentAt[i] = at
		}
		if strings.HasPrefix(l, "reply ") && strings.Contains(l, "grpc.health.v1.Health") {
			replies++
		}
	}
	if len(sentAt) != 3 || replies != 3 {
		t.Fatalf("a bidirectional stream through the mirrored Service should be answered by the cluster's server, 3 messages:\n%s", r)
	}
	const streamPath = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	var msgs []recorded
	eventually(t, 10*time.Second, "a copy of each message of the stream", func() error {
		msgs = recordedAs(rec, "grpc-message", streamPath)
		if len(msgs) != 3 {
			return fmt.Errorf("%d of 3 messages: %+v", len(msgs), msgs)
		}
		for i, m := range msgs {
			if !strings.Contains(string(m.Body), fmt.Sprintf("stream-%d", i+1)) {
				return fmt.Errorf("message %d copied as %q", i+1, m.Body)
			}
		}
		return nil
	})
	for i := 1; i < len(msgs); i++ {
		if msgs[i-1].At >= sentAt[i+1] {
			t.Errorf("the copy of message %d reached the laptop %v after it was sent, after message %d was: the stream was not copied as it went",
				i, time.Duration(msgs[i-1].At-sentAt[i]), i+1)
		}
	}
	if got := recordedAs(rec, "HTTP/2.0", streamPath); len(got) != 1 {
		t.Errorf("the stream's copy should end once, with the client's end: %+v", got)
	}
	if code := m.Stop(syscall.SIGINT, 60*time.Second); code != 0 {
		t.Errorf("mirror exited %d:\n%s", code, m.Output())
	}
}

// startKtAs starts kubectl-kt as another laptop would: its own KT_HOME.
func startKtAs(t testing.TB, home string, args ...string) *proc {
	t.Helper()
	return startProc(t, "ip", append([]string{"netns", "exec", laptopNetns, "env", "KT_HOME=" + home, ktBin, "--kubeconfig", laptopKubecfg}, args...)...)
}

// One laptop meshes the Service while another mirrors it; the mirror is killed, and the
// router drops it by itself; the mesh's developer, last out, restores the Service.
func TestMirrorAndMeshFromTwoLaptops(t *testing.T) {
	nothingLeftBehind(t)
	laptopServer(t, "laptop-dev1", "127.0.0.1:8080")
	rec := recorder(t, "127.0.0.1:8081")
	dev1 := startMesh(t, "web", "--expose", "8080:80", "--version-mark", "version:dev1")
	dev2 := startKtAs(t, t.TempDir(), "-n", testNamespace, "mirror", "web", "--expose", "8081:80", "--shadow-expire-after", "10s")
	dev2.WaitFor("Mirroring service", 90*time.Second)

	if got := withHeader(t, "version: dev1", "http://web/marked"); !strings.Contains(got, "echo from laptop-dev1") {
		t.Errorf("marked request with a mirror on the Service: %q", got)
	}
	lr := podLoad(t, "http://web/both", "-n", "300", "-c", "4")
	if lr.Errors != 0 {
		t.Errorf("%d failed requests while meshed and mirrored", lr.Errors)
	}
	eventually(t, 10*time.Second, "the copies reach the second laptop", func() error {
		if n := len(recordedBy(rec, "/both")); n < 300 {
			return fmt.Errorf("%d of 300 copies", n)
		}
		return nil
	})
	if r := fromPod(t, "http://web/unmarked"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("unmarked request: %s", r)
	}

	// The mirror dies without a word: the router drops it once its heartbeat is stale; the
	// mesh goes on, and the Service is not restored while dev1 is in it.
	dev2.Kill()
	eventually(t, 60*time.Second, "the router drops the killed mirror", func() error {
		svc, err := client.CoreV1().Services(testNamespace).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, ok := wire.GetMesh(svc)
		if !ok {
			return fmt.Errorf("the Service is no longer meshed")
		}
		if len(st.Members) != 1 || st.Members[0].Mirror {
			return fmt.Errorf("members %+v", st.Members)
		}
		return nil
	})
	before := len(recordedBy(rec, "/after-kill"))
	if got := withHeader(t, "version: dev1", "http://web/after-kill"); !strings.Contains(got, "echo from laptop-dev1") {
		t.Errorf("marked request after the mirror was dropped: %q", got)
	}
	if r := fromPod(t, "http://web/after-kill"); !strings.Contains(r.Stdout, "echo from web-") {
		t.Errorf("unmarked request after the mirror was dropped: %s", r)
	}
	time.Sleep(time.Second)
	if n := len(recordedBy(rec, "/after-kill")); n != before {
		t.Errorf("%d copies still sent to a dropped mirror", n-before)
	}
	if code := dev1.Stop(syscall.SIGINT, 60*time.Second); code != 0 || !strings.Contains(dev1.Output(), "Restored service") {
		t.Errorf("the last developer leaving (exit %d):\n%s", code, dev1.Output())
	}
	eventuallyFromPod(t, "http://web/after", "echo from web-")
	// What is left of the killed mirror is its own shadow pod, whose agent has exited; clean
	// removes it.
	if r := kt(t, "-n", testNamespace, "clean", "--threshold", "0s"); r.Code != 0 || !strings.Contains(r.Stdout, "kt-mesh-") {
		t.Errorf("clean of the killed mirror's shadow:\n%s", r)
	}
}

func TestMirrorSIGKILLThenClean(t *testing.T) {
	nothingLeftBehind(t)
	recorder(t, "127.0.0.1:8080")
	m := startKt(t, "-n", testNamespace, "mirror", "web", "--expose", "8080:80", "--shadow-expire-after", "20s")
	m.WaitFor("Mirroring service", 90*time.Second)
	m.Kill()
	r := kt(t, "-n", testNamespace, "clean", "--threshold", "0s")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Cleaned service "+testNamespace+"/web") {
		t.Errorf("clean after a killed mirror:\n%s", r)
	}
	eventuallyFromPod(t, "http://web/after-clean", "echo from web-")
}
