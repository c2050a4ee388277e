// Command shadow is the kt shadow agent, the one binary of the shadow image. The kt client
// starts it in a pod and talks to it through the API server's port-forward.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/agent"
	"github.com/kubectl-kt/kt/pkg/version"
	"github.com/kubectl-kt/kt/pkg/wire"
)

func main() {
	fs := flag.NewFlagSet("shadow", flag.ExitOnError)
	klog.InitFlags(fs)
	cfg := agent.Config{}
	fs.DurationVar(&cfg.ExpireAfter, "expire-after", 60*time.Second, "exit once the client has been gone this long (0: never)")
	fs.DurationVar(&cfg.KeepAlive, "keepalive", 10*time.Second, "interval of SSH keepalives to the client")
	fs.DurationVar(&cfg.FallbackAfter, "fallback-after", 10*time.Second, "send forwarded ports' connections to their fallbacks ("+wire.EnvFallback+") once the client has not been heard from this long (0: never)")
	fs.StringVar(&cfg.ListenIP, "listen-ip", "127.0.0.1", "address of the tunnel services (SSH, SOCKS5, DNS, relay, health)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	routerMode := fs.Bool("router", false, "run as a mesh router instead of a shadow")
	rcfg := agent.RouterConfig{}
	fs.StringVar(&rcfg.Service, "service", "", "router: namespace/name of the meshed Service")
	fs.StringVar(&rcfg.Origin, "origin", "", "router: the Service that selects the original pods")
	fs.StringVar(&rcfg.OriginIP, "origin-ip", "", "router: the origin Service's ClusterIP (dialled instead of its name, saving DNS lookups)")
	ports := fs.String("ports", "", "router: comma-separated ports to route")
	fs.DurationVar(&rcfg.MemberExpiry, "member-expiry", 60*time.Second, "router: drop a developer whose heartbeat is older")
	fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Printf("%s (protocol %d, commit %s)\n", version.Version, wire.ProtocolVersion, version.Commit)
		return
	}
	cfg.AuthorizedKey = os.Getenv(wire.EnvAuthorizedKey)
	digest, err := wire.ParseSecretDigest(os.Getenv(wire.EnvSecretDigest))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", wire.EnvSecretDigest, err)
		os.Exit(2)
	}
	cfg.SecretDigest = digest
	cfg.PodIP = os.Getenv(wire.EnvPodIP)
	cfg.RestoreService, cfg.Session = os.Getenv(wire.EnvRestoreService), os.Getenv(wire.EnvSession)
	cfg.PodName, cfg.PodNamespace = os.Getenv(wire.EnvPodName), os.Getenv(wire.EnvPodNamespace)
	cfg.Deployment = os.Getenv(wire.EnvDeployment)
	cfg.Shared = os.Getenv(wire.EnvShared) == "true"
	cfg.JoinKey = os.Getenv(wire.EnvJoinKey)
	fb, err := wire.ParseFallback(os.Getenv(wire.EnvFallback))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", wire.EnvFallback, err)
		os.Exit(2)
	}
	cfg.Fallback, cfg.OriginService = fb, os.Getenv(wire.EnvOriginService)
	if p := os.Getenv(wire.EnvProbePort); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: want a port number\n", wire.EnvProbePort, p)
			os.Exit(2)
		}
		cfg.ProbePort = n
	}
	if p := os.Getenv(wire.EnvProxyPort); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			fmt.Fprintf(os.Stderr, "%s=%q: want a port number\n", wire.EnvProxyPort, p)
			os.Exit(2)
		}
		cfg.ProxyPort = n
	}
	if cfg.PodIP == "" {
		cfg.PodIP = "0.0.0.0"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getpid() == 1 {
		go reapChildren(ctx)
	}
	if *routerMode {
		for _, p := range strings.Split(*ports, ",") {
			n, err := strconv.Atoi(p)
			if err != nil {
				fmt.Fprintf(os.Stderr, "--ports %q: %v\n", *ports, err)
				os.Exit(2)
			}
			rcfg.Ports = append(rcfg.Ports, n)
		}
		rcfg.PodName, rcfg.PodNamespace = os.Getenv(wire.EnvPodName), os.Getenv(wire.EnvPodNamespace)
		if err := agent.RunRouter(ctx, rcfg); err != nil {
			klog.FromContext(ctx).Error(err, "router failed")
			klog.Flush()
			os.Exit(1)
		}
		klog.Flush()
		return
	}
	if err := agent.Run(ctx, cfg); err != nil {
		klog.FromContext(ctx).Error(err, "agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
