package kube

import (
	"os"

	clientfeatures "k8s.io/client-go/features"
)

// StreamInformerLists makes informers take their first list as a stream of watch events
// (KEP-3157, served by default since Kubernetes 1.34; where it is not, the informer lists as
// before). Each object is then cut down to what kt keeps as it arrives, so that a watch of
// 10000 Services never holds them all whole at once. KUBE_FEATURE_WatchListClient, when set,
// decides as in any client-go program. Call it first, before any client is made.
func StreamInformerLists() {
	clientfeatures.ReplaceFeatureGates(watchListGates{clientfeatures.FeatureGates()})
}

type watchListGates struct{ clientfeatures.Gates }

func (g watchListGates) Enabled(f clientfeatures.Feature) bool {
	if f == clientfeatures.WatchListClient {
		if _, set := os.LookupEnv("KUBE_FEATURE_" + string(f)); !set {
			return true
		}
	}
	return g.Gates.Enabled(f)
}
