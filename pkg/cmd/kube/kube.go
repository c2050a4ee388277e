// Package kube builds what every command needs from kubectl's flags: the namespace, the
// REST config and a client.
package kube

import (
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
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
	// The clientset speaks protobuf, as the API server's own components do: a list of 10000
	// Services decodes in a fraction of JSON's memory and time. rc stays as it was for the
	// rest (port-forward's upgrade, the dynamic client of custom resources).
	pc := rest.CopyConfig(rc)
	pc.ContentType = runtime.ContentTypeProtobuf
	pc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(pc)
	if err != nil {
		return "", nil, nil, err
	}
	return ns, rc, client, nil
}

// CommandLine is how the user started this kt, as `kubectl kt …`: shadows carry it, for status
// and birdseye, where anyone who may get pods reads it, so credential flags are redacted.
func CommandLine() string { return "kubectl kt " + strings.Join(Redact(os.Args[1:]), " ") }

// credentialFlags are kubectl's flags whose values are, or point at, credentials.
var credentialFlags = map[string]bool{"token": true, "password": true, "username": true, "client-key": true, "client-certificate": true}

// Redact replaces the values of credential flags (--token T, --token=T, …) with "REDACTED".
func Redact(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") || !credentialFlags[name] {
			out = append(out, a)
			continue
		}
		out = append(out, "--"+name+"=REDACTED")
		if !hasValue && i+1 < len(args) {
			i++ // the value is the next argument
		}
	}
	return out
}
