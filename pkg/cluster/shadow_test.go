package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-kt/kt/pkg/wire"
)

func TestShadowPodIsRestricted(t *testing.T) {
	for _, ports := range [][]corev1.ContainerPort{nil, {{ContainerPort: 8080}}, {{ContainerPort: 80, Name: "http"}, {ContainerPort: 8080}}} {
		pod, err := ShadowPod(ShadowSpec{Namespace: "ns", Role: wire.RoleExchange, Session: "abc123", Owner: "dev@laptop",
			AuthorizedKey: "ssh-ed25519 AAAA", ForwardPorts: ports, Opts: NewPodOptions()})
		if err != nil {
			t.Fatal(err)
		}
		c := pod.Spec.Containers[0]
		sc := c.SecurityContext
		if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !*sc.RunAsNonRoot ||
			len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
			t.Errorf("ports %v: container security context not restricted: %+v", ports, sc)
		}
		psc := pod.Spec.SecurityContext
		if psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || *psc.RunAsUser == 0 {
			t.Errorf("pod security context: %+v", psc)
		}
		low := len(ports) > 0 && ports[0].ContainerPort < 1024
		if got := len(psc.Sysctls) == 1 && psc.Sysctls[0].Name == "net.ipv4.ip_unprivileged_port_start"; got != low {
			t.Errorf("ports %v: unprivileged-port sysctl set = %v, want %v", ports, got, low)
		}
		if (c.ReadinessProbe != nil) != (len(ports) > 0) {
			t.Errorf("ports %v: readiness probe %v", ports, c.ReadinessProbe)
		}
		if *pod.Spec.AutomountServiceAccountToken {
			t.Error("the shadow must not mount a service account token")
		}
		if pod.Name != "kt-exchange-abc123" || pod.Labels[wire.ManagedByLabel] != wire.ManagedBy || pod.Labels[wire.SessionLabel] != "abc123" {
			t.Errorf("name %s labels %v", pod.Name, pod.Labels)
		}
		for _, e := range c.Env {
			if strings.Contains(strings.ToLower(e.Value), "private") {
				t.Errorf("env %s looks like a private key", e.Name)
			}
		}
	}
}

func TestReadinessProbe(t *testing.T) {
	for _, c := range []struct {
		role      string
		ports     []int32
		probePort int32  // of the HTTP probe; 0: a TCP probe of the first forwarded port
		env       string // KT_PROBE_PORT
	}{
		{role: wire.RoleExchange, ports: []int32{80}, probePort: wire.ProbePort},
		{role: wire.RolePreview, ports: []int32{wire.ProbePort, wire.ProbePort + 1, 8080}, probePort: wire.ProbePort + 2, env: "2086"},
		{role: wire.RoleRouter, ports: []int32{80, 9000}},
	} {
		var fwds []corev1.ContainerPort
		for _, p := range c.ports {
			fwds = append(fwds, corev1.ContainerPort{ContainerPort: p})
		}
		pod, err := ShadowPod(ShadowSpec{Namespace: "ns", Role: c.role, Session: "abc123", AuthorizedKey: "ssh-ed25519 AAAA", ForwardPorts: fwds, Opts: NewPodOptions()})
		if err != nil {
			t.Fatal(err)
		}
		ctr := pod.Spec.Containers[0]
		h := ctr.ReadinessProbe.ProbeHandler
		env := ""
		for _, e := range ctr.Env {
			if e.Name == wire.EnvProbePort {
				env = e.Value
			}
		}
		if env != c.env {
			t.Errorf("%s %v: %s=%q, want %q", c.role, c.ports, wire.EnvProbePort, env, c.env)
		}
		if c.probePort == 0 {
			if h.TCPSocket == nil || h.TCPSocket.Port.IntVal != c.ports[0] {
				t.Errorf("%s %v: probe %+v, want TCP to %d", c.role, c.ports, h, c.ports[0])
			}
			continue
		}
		want := fmt.Sprintf("/forwarding?port=%d", c.ports[0])
		if h.HTTPGet == nil || h.HTTPGet.Port.IntVal != c.probePort || h.HTTPGet.Path != want {
			t.Errorf("%s %v: probe %+v, want GET :%d%s", c.role, c.ports, h.HTTPGet, c.probePort, want)
		}
	}
}

func TestPodProxyPortAvoidsTheForwardsAndTheProbe(t *testing.T) {
	for _, c := range []struct {
		ports []int32
		want  int
	}{
		{ports: []int32{80}, want: wire.ProxyPort},
		{ports: []int32{wire.ProxyPort, 8080}, want: wire.ProxyPort + 1},
		// forwards on the probe's ports push the probe to 2086, and the proxy above it
		{ports: []int32{wire.ProbePort, wire.ProbePort + 1}, want: wire.ProxyPort + 1},
	} {
		var fwds []corev1.ContainerPort
		for _, p := range c.ports {
			fwds = append(fwds, corev1.ContainerPort{ContainerPort: p})
		}
		spec := ShadowSpec{Namespace: "ns", Role: wire.RoleMesh, Session: "abc123", AuthorizedKey: "ssh-ed25519 AAAA", ForwardPorts: fwds, Opts: NewPodOptions()}
		pod, err := ShadowPod(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := ProxyPort(pod); got != 0 {
			t.Errorf("%v: a shadow without PodProxy takes reverse streams at %d", c.ports, got)
		}
		spec.PodProxy = true
		if pod, err = ShadowPod(spec); err != nil {
			t.Fatal(err)
		}
		if got := ProxyPort(pod); got != c.want {
			t.Errorf("%v: proxy port %d, want %d", c.ports, got, c.want)
		}
	}
}

func TestPodQuota(t *testing.T) {
	for _, c := range []struct {
		in      string
		cpu     string
		mem     string
		wantErr string
	}{
		{in: "", cpu: "", mem: ""},
		{in: "0.5c,512m", cpu: "500m", mem: "512Mi"},
		{in: "2c", cpu: "2"},
		{in: "1g", mem: "1Gi"},
		{in: "100k", mem: "100Ki"},
		{in: "lots", wantErr: "is not <number><unit>"},
		{in: "1c,2c", wantErr: "sets cpu twice"},
	} {
		o := NewPodOptions()
		o.PodQuota = c.in
		rl, err := o.Resources()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		check := func(name corev1.ResourceName, want string) {
			q, ok := rl[name]
			if want == "" {
				if ok {
					t.Errorf("%q: unexpected %s %s", c.in, name, q.String())
				}
				return
			}
			if !ok || q.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("%q: %s = %s, want %s", c.in, name, q.String(), want)
			}
		}
		check(corev1.ResourceCPU, c.cpu)
		check(corev1.ResourceMemory, c.mem)
	}
}

func TestPodOptionsValidate(t *testing.T) {
	for name, mod := range map[string]func(*PodOptions){
		"bad label":        func(o *PodOptions) { o.Labels = map[string]string{"a b": "c"} },
		"bad label value":  func(o *PodOptions) { o.Labels = map[string]string{"a": "c d"} },
		"empty image":      func(o *PodOptions) { o.Image = "" },
		"bad SA":           func(o *PodOptions) { o.ServiceAccount = "Not_OK" },
		"zero timeout":     func(o *PodOptions) { o.PodCreationTimeout = 0 },
		"expiry too short": func(o *PodOptions) { o.ExpireAfter = 1 },
	} {
		o := NewPodOptions()
		mod(o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
	if err := NewPodOptions().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestRouterResources(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "agent"}}}}
	routerResources(pod)
	c := pod.Spec.Containers[0]
	if pod.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restart policy %s: a router that dies must come back", pod.Spec.RestartPolicy)
	}
	if m := c.Resources.Limits[corev1.ResourceMemory]; m.String() != "256Mi" {
		t.Errorf("memory limit %s", m.String())
	}
	if len(c.Env) != 1 || c.Env[0].Name != "GOMEMLIMIT" || c.Env[0].Value != strconv.Itoa(256<<20*4/5) {
		t.Errorf("env %v", c.Env)
	}
	// --pod-quota's memory stays, and sets GOMEMLIMIT.
	q := resource.MustParse("1Gi")
	pod = &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: q}, Limits: corev1.ResourceList{corev1.ResourceMemory: q}}}}}}
	routerResources(pod)
	if m := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; m.String() != "1Gi" || pod.Spec.Containers[0].Env[0].Value != strconv.Itoa(1<<30*4/5) {
		t.Errorf("with --pod-quota: %s %v", m.String(), pod.Spec.Containers[0].Env)
	}
}

// TestPodUsableWaitsForTheKubeletsCaches: a restarted kubelet's "failed to sync secret cache"
// is waited out; another container config error is reported at once.
func TestPodUsableWaitsForTheKubeletsCaches(t *testing.T) {
	waiting := func(msg string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kt-connect-shared", Namespace: "ns"},
			Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: msg}}}}}}
	}
	if ok, err := podUsable(waiting("failed to sync secret cache: timed out waiting for the condition"), true); ok || err != nil {
		t.Errorf("a kubelet filling its cache: %v, %v; want to keep waiting", ok, err)
	}
	if ok, err := podUsable(waiting(`secret "kt-connect-shared" not found`), true); ok || err == nil || !strings.Contains(err.Error(), "cannot start its container") {
		t.Errorf("a missing Secret: %v, %v; want an error now", ok, err)
	}
}
