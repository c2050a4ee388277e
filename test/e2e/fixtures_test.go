//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The fixtures every test shares, in namespace kt-e2e: a Deployment and Service "web"
// (testapp: HTTP on 8080 behind port 80, UDP echo on 9090), a headless Service and StatefulSet
// "db" (pod db-0), and the client pod that runs in-cluster requests.
const fixturesYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: kt-e2e}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: kt-e2e}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {kt-e2e/testapp: TESTAPP_SUM}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [serve, -http, ":8080", -udp, ":9090"]
        ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 9090, protocol: UDP}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: kt-e2e}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: udp, port: 9090, targetPort: 9090, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: kt-e2e}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: kt-e2e}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}, annotations: {kt-e2e/testapp: TESTAPP_SUM}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [serve, -http, ":8080", -udp, ":9090"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: multi, namespace: kt-e2e}
spec:
  replicas: 2
  selector: {matchLabels: {app: multi}}
  template:
    metadata: {labels: {app: multi}, annotations: {kt-e2e/testapp: TESTAPP_SUM}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: multi
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [serve, -http, ":8080,:8081", -udp, ""]
        ports: [{name: main, containerPort: 8080}, {name: admin, containerPort: 8081}]
        envFrom: [{configMapRef: {name: multi-config}, prefix: CFG_}]
        env:
        - {name: GREETING, value: "hello there"}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: SELF, value: "http://$(POD_NAME):8080/$(CFG_MODE)"}
        - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: multi-secret, key: password}}}
        - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
        resources: {limits: {memory: 256Mi}}
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: multi-config, namespace: kt-e2e}
data: {MODE: dev, LEVEL: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: multi-secret, namespace: kt-e2e}
stringData: {password: "p@ss 'word'"}
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: kt-e2e}
spec:
  selector: {app: multi}
  ports:
  - {name: main, port: 80, targetPort: main}
  - {name: admin, port: 81, targetPort: 8081}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: grpc, namespace: kt-e2e}
spec:
  selector: {matchLabels: {app: grpc}}
  template:
    metadata: {labels: {app: grpc}, annotations: {kt-e2e/testapp: TESTAPP_SUM}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: grpc
        image: TESTAPP
        imagePullPolicy: IfNotPresent
        args: [grpc-serve, -addr, ":9000", -name, cluster]
        readinessProbe: {tcpSocket: {port: 9000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: kt-e2e}
spec:
  selector: {app: grpc}
  ports: [{name: grpc, port: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: kt-e2e, labels: {app: e2e-client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: TESTAPP
    imagePullPolicy: IfNotPresent
    args: [sleep]
`

func setupFixtures(ctx context.Context) error {
	// The workloads' templates carry the testapp binary's checksum, so that a rebuilt
	// testapp rolls them out (the image keeps its tag).
	sum := "none"
	if b, err := os.ReadFile(envOr("KT_TESTAPP_BIN", strings.TrimSuffix(ktBin, "kubectl-kt")+"testapp")); err == nil {
		sum = fmt.Sprintf("%x", sha256.Sum256(b))[:16]
	}
	y := strings.ReplaceAll(fixturesYAML, "TESTAPP_SUM", `"`+sum+`"`)
	y = strings.ReplaceAll(y, "TESTAPP", testapp)
	// Services an earlier, killed run left changed are restored first, as a user would.
	exec.CommandContext(ctx, ktBin, "--kubeconfig", hostKubeconfig, "clean", "-A", "--threshold", "0s").Run()
	// The client pod runs testapp's tools: recreate it so it runs the image just built.
	kubectlCtx(ctx, "", "-n", testNamespace, "delete", "pod", clientPodName, "--ignore-not-found", "--grace-period=0", "--force")
	if out, err := kubectlCtx(ctx, y, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("apply fixtures: %v: %s", err, out)
	}
	for _, c := range [][]string{
		{"-n", testNamespace, "rollout", "status", "deploy/web", "--timeout=120s"},
		{"-n", testNamespace, "rollout", "status", "sts/db", "--timeout=120s"},
		{"-n", testNamespace, "rollout", "status", "deploy/multi", "--timeout=120s"},
		{"-n", testNamespace, "rollout", "status", "deploy/grpc", "--timeout=120s"},
		{"-n", testNamespace, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"},
	} {
		if out, err := kubectlCtx(ctx, "", c...); err != nil {
			return fmt.Errorf("kubectl %v: %v: %s", c, err, out)
		}
	}
	// A fresh Service needs a kube-proxy sync and a CoreDNS update before it answers.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := kubectlCtx(ctx, "", "exec", "-n", testNamespace, clientPodName, "--", "timeout", "5", "wget", "-qO-", "http://web/ready")
		if err == nil && strings.Contains(out, "echo from") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("web service not answering from the client pod: %v: %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func kubectlCtx(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", hostKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
