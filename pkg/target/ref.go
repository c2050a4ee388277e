package target

import "strings"

// Kind is what a TARGET argument names.
type Kind string

const (
	KindService     Kind = "service"
	KindDeployment  Kind = "deployment"
	KindStatefulSet Kind = "statefulset"
	KindPod         Kind = "pod"
)

// kinds maps every spelling kubectl accepts for a kind to the kind.
var kinds = map[string]Kind{
	"svc": KindService, "service": KindService, "services": KindService,
	"deploy": KindDeployment, "deployment": KindDeployment, "deployments": KindDeployment,
	"sts": KindStatefulSet, "statefulset": KindStatefulSet, "statefulsets": KindStatefulSet,
	"po": KindPod, "pod": KindPod, "pods": KindPod,
}

// ParseKind returns the kind a spelling of it names (svc, service, deployments, po, …).
func ParseKind(s string) (Kind, bool) {
	k, ok := kinds[strings.ToLower(s)]
	return k, ok
}

// ParseRef splits a TARGET argument, KIND/NAME or a bare NAME (a Service), into its kind and
// name. ok is false when the kind is unknown or the name is empty or has a slash; the caller
// says which kinds it takes.
func ParseRef(ref string) (kind Kind, name string, ok bool) {
	k, name, found := strings.Cut(ref, "/")
	if !found {
		k, name = "svc", ref
	}
	kind, ok = ParseKind(k)
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return kind, name, true
}
