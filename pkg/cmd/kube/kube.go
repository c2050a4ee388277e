// Package kube builds what every command needs from kubectl's flags: the namespace, the
// REST config and a client.
package kube

import (
	"os"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Clients returns the namespace (the flag, else the kubeconfig context's), the REST config and
// a clientset.
func Clients(f genericclioptions.RESTClientGetter) (string, *rest.Config, kubernetes.Interface, error) {
	ns, _, err := f.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", nil, nil, err
	}
	rc, err := f.ToRESTConfig()
	if err != nil {
		return "", nil, nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", nil, nil, err
	}
	return ns, rc, client, nil
}

// CommandLine is how the user started this kt, as `kubectl kt …`: shadows carry it, for status
// and birdseye.
func CommandLine() string { return "kubectl kt " + strings.Join(os.Args[1:], " ") }
