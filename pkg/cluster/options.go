package cluster

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubectl-kt/kt/pkg/version"
)

// PodOptions are the flags shared by every command that creates a pod.
type PodOptions struct {
	Image              string
	ImagePullSecret    string
	ServiceAccount     string
	NodeSelector       map[string]string
	Labels             map[string]string
	Annotations        map[string]string
	PodQuota           string
	PodCreationTimeout time.Duration
	PortForwardTimeout time.Duration
	ForceUpdate        bool
	ExpireAfter        time.Duration
	// FallbackAfter is how long an exchange's or mesh's shadow waits for a client it no longer
	// hears from before it sends the traffic to the original pods instead (0: never).
	FallbackAfter time.Duration
	// FallbackGiven says --fallback-after was given (on the command line or in the config):
	// CompleteFallback leaves it as it is.
	FallbackGiven bool
}

// DefaultFallbackAfter is exchange's and mesh's --fallback-after unless one is given: callers
// of a Service whose developer went away wait no longer than this for the original pods.
const DefaultFallbackAfter = 10 * time.Second

// CompleteFallback fits a --fallback-after nobody gave to the expiry: at most half of it, so
// the shadow falls back well before it expires (a short --shadow-expire-after alone is no
// usage error). A given one is left for ValidateFallback to check.
func (o *PodOptions) CompleteFallback() {
	if !o.FallbackGiven && o.FallbackAfter > o.ExpireAfter/2 {
		o.FallbackAfter = o.ExpireAfter / 2
	}
}

// NewPodOptions returns the defaults.
func NewPodOptions() *PodOptions {
	return &PodOptions{
		Image:              version.ShadowImage(),
		PodCreationTimeout: 60 * time.Second,
		PortForwardTimeout: 10 * time.Second,
		ExpireAfter:        60 * time.Second,
	}
}

var quotaRE = regexp.MustCompile(`^([0-9]*\.?[0-9]+)([ckmg])$`)

// Resources parses --pod-quota.
func (o *PodOptions) Resources() (corev1.ResourceList, error) {
	if o.PodQuota == "" {
		return nil, nil
	}
	rl := corev1.ResourceList{}
	for _, part := range strings.Split(o.PodQuota, ",") {
		m := quotaRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(part)))
		if m == nil {
			return nil, fmt.Errorf("--pod-quota %q: %q is not <number><unit>; write e.g. 0.5c,256m (c: cores; k, m, g: KiB, MiB, GiB)", o.PodQuota, part)
		}
		var name corev1.ResourceName
		var q string
		switch m[2] {
		case "c":
			name, q = corev1.ResourceCPU, m[1]
		default:
			name, q = corev1.ResourceMemory, m[1]+map[string]string{"k": "Ki", "m": "Mi", "g": "Gi"}[m[2]]
		}
		if _, dup := rl[name]; dup {
			return nil, fmt.Errorf("--pod-quota %q sets %s twice; give at most one cpu and one memory value", o.PodQuota, name)
		}
		qty, err := resource.ParseQuantity(q)
		if err != nil {
			return nil, fmt.Errorf("--pod-quota %q: %w", o.PodQuota, err)
		}
		rl[name] = qty
	}
	return rl, nil
}

// Validate checks the options without contacting the cluster.
func (o *PodOptions) Validate() error {
	if o.Image == "" {
		return fmt.Errorf("--image is empty; leave it out to use %s", version.ShadowImage())
	}
	if _, err := o.Resources(); err != nil {
		return err
	}
	for k, v := range o.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("--with-label %s=%s: the key is not a valid label key: %s", k, v, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("--with-label %s=%s: the value is not a valid label value: %s", k, v, errs[0])
		}
	}
	for k := range o.NodeSelector {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("--node-selector %s: not a valid label key: %s", k, errs[0])
		}
	}
	for k := range o.Annotations {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("--with-annotation %s: not a valid annotation key: %s", k, errs[0])
		}
	}
	if o.ServiceAccount != "" {
		if errs := validation.IsDNS1123Subdomain(o.ServiceAccount); len(errs) > 0 {
			return fmt.Errorf("--service-account %q: %s", o.ServiceAccount, errs[0])
		}
	}
	if o.PodCreationTimeout <= 0 || o.PortForwardTimeout <= 0 {
		return fmt.Errorf("--pod-creation-timeout and --port-forward-timeout must be positive durations such as 30s")
	}
	if o.ExpireAfter < 10*time.Second {
		return fmt.Errorf("--shadow-expire-after %s is too short for keepalives to hold; use 10s or more", o.ExpireAfter)
	}
	return nil
}

// ValidateFallback checks --fallback-after (exchange's and mesh's flag) against the expiry.
func (o *PodOptions) ValidateFallback() error {
	if o.FallbackAfter != 0 && (o.FallbackAfter < 3*time.Second || o.FallbackAfter >= o.ExpireAfter) {
		return fmt.Errorf("--fallback-after %s: use 0 (never) or from 3s to less than --shadow-expire-after (%s)", o.FallbackAfter, o.ExpireAfter)
	}
	return nil
}
