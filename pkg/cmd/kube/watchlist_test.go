package kube

import (
	"testing"

	clientfeatures "k8s.io/client-go/features"
)

func TestWatchListGates(t *testing.T) {
	g := watchListGates{clientfeatures.FeatureGates()}
	if !g.Enabled(clientfeatures.WatchListClient) {
		t.Errorf("WatchListClient off without KUBE_FEATURE_WatchListClient")
	}
	if g.Enabled(clientfeatures.ClientsAllowCBOR) {
		t.Errorf("another feature changed: ClientsAllowCBOR on")
	}
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	if (watchListGates{clientfeatures.FeatureGates()}).Enabled(clientfeatures.WatchListClient) {
		t.Errorf("KUBE_FEATURE_WatchListClient=false did not turn it off")
	}
}
