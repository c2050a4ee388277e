// Package completion completes kubectl kt's command lines: kubectl's flags (--namespace,
// --context, --cluster, --user) and the TARGET arguments, the way kubectl completes its own,
// and prints the shell scripts for kubectl-kt run as a command of its own.
package completion

import (
	"context"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-kt/kt/pkg/cmd/kube"
	"github.com/kubectl-kt/kt/pkg/cmd/usage"
	"github.com/kubectl-kt/kt/pkg/target"
)

// KrewLinkLine is what the user runs once after `kubectl krew install kt`, which links only
// kubectl-kt (krew issue 812): a kubectl_complete-kt in krew's bin that asks kubectl-kt, so
// that it outlives upgrades. The krew manifest's caveats carry the same line.
const KrewLinkLine = `printf '#!/bin/sh\nexec kubectl-kt __complete "$@"\n' > "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-kt" && chmod +x "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-kt"`

// timeout bounds a completion's API request: a TAB must not hang on an unreachable cluster.
const timeout = 5 * time.Second

// NewCmdCompletion returns the completion command. kubectl completes `kubectl kt …` itself,
// through kubectl_complete-kt; the scripts it prints complete kubectl-kt typed on its own.
func NewCmdCompletion(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	shells := map[string]func(io.Writer) error{
		"bash":       func(w io.Writer) error { return root.GenBashCompletionV2(w, true) },
		"zsh":        root.GenZshCompletion,
		"fish":       func(w io.Writer) error { return root.GenFishCompletion(w, true) },
		"powershell": root.GenPowerShellCompletionWithDesc,
	}
	return &cobra.Command{
		Use:   "completion (bash | zsh | fish | powershell)",
		Short: "Complete kubectl kt's commands, flags and targets in your shell",
		Long: `kubectl (1.26 or later) completes 'kubectl kt …' by itself, once kubectl's own completion is
loaded (for example 'source <(kubectl completion bash)' in ~/.bashrc): it runs
kubectl_complete-kt, which comes in the release archive next to kubectl-kt; keep both on PATH.
'kubectl krew install kt' links only kubectl-kt; to link the other, run once:

  ` + KrewLinkLine + `

Subcommands, flags, --namespace, --context, --cluster, --user and the TARGET arguments
(Services, deploy/, sts/ and pod/ names in the namespace) complete as kubectl's do.

The script this command prints completes kubectl-kt typed as a command of its own.`,
		Example: `  source <(kubectl kt completion bash)        # kubectl-kt <TAB>
  kubectl kt completion zsh > "${fpath[1]}/_kubectl-kt"`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			gen, ok := shells[args[0]]
			if !ok {
				return usage.Errorf("unknown shell %q: use bash, zsh, fish or powershell", args[0])
			}
			return gen(streams.Out)
		},
	}
}

// RegisterFlags completes kubectl's flags on root: --namespace from the cluster, --context,
// --cluster and --user from the kubeconfig.
func RegisterFlags(root *cobra.Command, f *genericclioptions.ConfigFlags) {
	fromConfig := func(names func(raw clientcmdapi.Config) []string) cobra.CompletionFunc {
		return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			raw, err := f.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return matching(names(raw), toComplete), cobra.ShellCompDirectiveNoFileComp
		}
	}
	complete := map[string]cobra.CompletionFunc{
		"namespace": func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			_, _, client, err := kube.Clients(f)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return matching(namespaces(client), toComplete), cobra.ShellCompDirectiveNoFileComp
		},
		"context": fromConfig(func(c clientcmdapi.Config) []string { return sortedKeys(c.Contexts) }),
		"cluster": fromConfig(func(c clientcmdapi.Config) []string { return sortedKeys(c.Clusters) }),
		"user":    fromConfig(func(c clientcmdapi.Config) []string { return sortedKeys(c.AuthInfos) }),
	}
	for name, fn := range complete {
		if err := root.RegisterFlagCompletionFunc(name, fn); err != nil {
			panic(err) // a flag kubectl's ConfigFlags no longer has: a programming error
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// Targets completes a command's first argument, a TARGET: KIND/NAME for each of kinds ("svc",
// "deploy", "sts", "pod"), and a bare NAME, a Service, when bare. Later arguments complete
// as files (run's command, mount's directory).
func Targets(f genericclioptions.RESTClientGetter, bare bool, kinds ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		ns, _, client, err := kube.Clients(f)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return targets(client, ns, bare, kinds, toComplete)
	}
}

// targets lists what toComplete may become: with a KIND/ prefix, the names of that kind;
// without, the Services (when bare) and the KIND/ prefixes, which take no space after them.
func targets(client kubernetes.Interface, ns string, bare bool, kinds []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if typed, _, found := strings.Cut(toComplete, "/"); found {
		k, _ := target.ParseKind(typed)
		kind := short[k]
		if kind == "" || !slices.Contains(kinds, kind) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, name := range names(client, ns, kind) {
			out = append(out, typed+"/"+name) // as the user spelled the kind
		}
		return matching(out, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	if bare {
		out = names(client, ns, "svc")
	}
	for _, k := range kinds {
		out = append(out, k+"/")
	}
	out = matching(out, toComplete)
	directive := cobra.ShellCompDirectiveNoFileComp
	if len(out) > 0 && !slices.ContainsFunc(out, func(s string) bool { return !strings.HasSuffix(s, "/") }) {
		directive |= cobra.ShellCompDirectiveNoSpace // only KIND/ prefixes: the name follows
	}
	return out, directive
}

// short is the spelling of each kind that kt's TARGET prefixes use.
var short = map[target.Kind]string{target.KindService: "svc", target.KindDeployment: "deploy", target.KindStatefulSet: "sts", target.KindPod: "pod"}

// names lists the objects of kind in ns, sorted; none when the API cannot be asked.
func names(client kubernetes.Interface, ns, kind string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	opts := metav1.ListOptions{}
	var objs []metav1.Object
	switch kind {
	case "svc":
		if l, err := client.CoreV1().Services(ns).List(ctx, opts); err == nil {
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
	case "deploy":
		if l, err := client.AppsV1().Deployments(ns).List(ctx, opts); err == nil {
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
	case "sts":
		if l, err := client.AppsV1().StatefulSets(ns).List(ctx, opts); err == nil {
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
	case "pod":
		if l, err := client.CoreV1().Pods(ns).List(ctx, opts); err == nil {
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	sort.Strings(out)
	return out
}

func namespaces(client kubernetes.Interface) []string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	list, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range list.Items {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}

// matching keeps the candidates that start with prefix.
func matching(candidates []string, prefix string) []string {
	var out []string
	for _, c := range candidates {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}
