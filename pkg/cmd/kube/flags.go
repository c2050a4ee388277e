package kube

import (
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubectl-kt/kt/pkg/cluster"
)

// secondsDuration is a duration flag that also takes a bare number of seconds, as
// kt-connect's --podCreationTimeout 60 did.
type secondsDuration struct{ d *time.Duration }

func (s secondsDuration) String() string { return s.d.String() }
func (s secondsDuration) Type() string   { return "duration" }
func (s secondsDuration) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	*s.d = d
	return nil
}

// DurationVar defines a duration flag that also accepts plain seconds.
func DurationVar(fs *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(secondsDuration{p}, name, usage)
}

// AddPodFlags binds the shadow pod options to fs: the flags of every command that starts one.
func AddPodFlags(fs *pflag.FlagSet, o *cluster.PodOptions) {
	fs.StringVar(&o.Image, "image", o.Image, "Shadow image. The default is built from the same source as this client.")
	fs.StringVar(&o.ImagePullSecret, "image-pull-secret", o.ImagePullSecret, "Secret to pull the shadow image with.")
	fs.StringVar(&o.ServiceAccount, "service-account", o.ServiceAccount, "Service account of the shadow pod (default: the namespace's default).")
	fs.StringToStringVar(&o.NodeSelector, "node-selector", o.NodeSelector, "Node selector of the shadow pod, k=v[,k=v].")
	fs.StringToStringVar(&o.Labels, "with-label", o.Labels, "Extra labels on the shadow pod, k=v[,k=v].")
	fs.StringToStringVar(&o.Annotations, "with-annotation", o.Annotations, "Extra annotations on the shadow pod, k=v[,k=v].")
	fs.StringVar(&o.PodQuota, "pod-quota", o.PodQuota, "CPU and memory of the shadow pod as requests = limits, e.g. 0.5c,256m (c: cores; k, m, g: KiB, MiB, GiB).")
	DurationVar(fs, &o.PodCreationTimeout, "pod-creation-timeout", o.PodCreationTimeout, "How long to wait for the shadow pod to run.")
	DurationVar(fs, &o.PortForwardTimeout, "port-forward-timeout", o.PortForwardTimeout, "How long to wait for a port-forward tunnel.")
	fs.BoolVar(&o.ForceUpdate, "force-update", o.ForceUpdate, "Pull the shadow image every time (imagePullPolicy Always).")
	DurationVar(fs, &o.ExpireAfter, "shadow-expire-after", o.ExpireAfter, "The shadow exits once this client has been gone this long.")
}

// AddFallbackFlag binds --fallback-after: exchange's and mesh's, whose shadows send the traffic
// back to the original pods while this client is away.
func AddFallbackFlag(fs *pflag.FlagSet, o *cluster.PodOptions) {
	o.FallbackAfter = cluster.DefaultFallbackAfter
	fs.Var(givenFlag{secondsDuration{&o.FallbackAfter}, &o.FallbackGiven}, "fallback-after",
		"When the shadow has not heard from this machine this long, it sends the traffic to the original pods until this machine is back. Unless given, at most half of --shadow-expire-after; 0: never (callers then wait for this machine until the shadow expires).")
}

// givenFlag is a flag that records being set, by the command line or by a config default.
type givenFlag struct {
	pflag.Value
	given *bool
}

func (f givenFlag) Set(s string) error {
	*f.given = true
	return f.Value.Set(s)
}
