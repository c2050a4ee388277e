// Package envvars works out the environment a container of a pod is given by its spec (env
// and envFrom, with ConfigMap, Secret, field and resource references resolved and $(VAR)
// expanded as the kubelet does), so that a process on the laptop can run with the same.
package envvars

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/cmd/util/podcmd"
)

// DefaultContainerAnnotation names the container kubectl picks when none is given.
const DefaultContainerAnnotation = podcmd.DefaultContainerAnnotationName

// Var is one variable.
type Var struct {
	Name, Value string
}

// Resolver reads the ConfigMaps and Secrets that a pod's env refers to, once each.
type Resolver struct {
	Client kubernetes.Interface

	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	errs       map[string]error
}

// validName is what the kubelet accepts as a variable name from envFrom (C identifiers and
// more: any printable ASCII but '=').
var validName = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)

// Resolve returns the container's variables in the order the kubelet sets them (envFrom
// first, then env; a later one replaces an earlier one of the same name), and a warning for
// each one it left out (a reference to something missing or unreadable that is not optional).
func (r *Resolver) Resolve(ctx context.Context, pod *corev1.Pod, container string) ([]Var, []string, error) {
	c := FindContainer(pod, container)
	if c == nil {
		var names []string
		for _, c := range pod.Spec.Containers {
			names = append(names, c.Name)
		}
		return nil, nil, fmt.Errorf("pod %s has no container %q; its containers: %s", pod.Name, container, strings.Join(names, ", "))
	}
	var vars []Var
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			vars[i].Value = value
			return
		}
		index[name] = len(vars)
		vars = append(vars, Var{name, value})
	}
	var warnings []string
	for _, from := range c.EnvFrom {
		data, what, optional, err := r.source(ctx, pod.Namespace, from)
		if err != nil {
			if !optional {
				warnings = append(warnings, fmt.Sprintf("envFrom %s: %v; its variables are left out", what, err))
			}
			continue
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys) // the kubelet's order too
		for _, k := range keys {
			if name := from.Prefix + k; validName.MatchString(name) {
				set(name, data[k])
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars, index))
			continue
		}
		v, ok, err := r.valueFrom(ctx, pod, c, e.ValueFrom)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: %v; left out", e.Name, err))
			continue
		}
		if ok {
			set(e.Name, v)
		}
	}
	return vars, warnings, nil
}

// FindContainer returns the container of pod named name; when name is empty, the one the
// pod's kubectl.kubernetes.io/default-container annotation names, else the first, as kubectl.
func FindContainer(pod *corev1.Pod, name string) *corev1.Container {
	c, err := podcmd.FindOrDefaultContainerByName(pod, name, true, nil)
	if err != nil {
		return nil
	}
	return c
}

// source is the data of an envFrom item.
func (r *Resolver) source(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, string, bool, error) {
	switch {
	case from.ConfigMapRef != nil:
		ref := from.ConfigMapRef
		cm, err := r.configMap(ctx, ns, ref.Name)
		if err != nil {
			return nil, "configmap " + ref.Name, ref.Optional != nil && *ref.Optional && errors.Is(err, errMissing), err
		}
		return cm.Data, "configmap " + ref.Name, false, nil
	case from.SecretRef != nil:
		ref := from.SecretRef
		s, err := r.secret(ctx, ns, ref.Name)
		if err != nil {
			return nil, "secret " + ref.Name, ref.Optional != nil && *ref.Optional && errors.Is(err, errMissing), err
		}
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		return data, "secret " + ref.Name, false, nil
	}
	return nil, "an unknown source", true, nil
}

// valueFrom resolves one reference; ok is false for an optional one that is not there.
func (r *Resolver) valueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := r.configMap(ctx, pod.Namespace, ref.Name)
		if err != nil {
			return "", false, unlessOptional(err, optional)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			return "", false, unlessOptional(missing{fmt.Sprintf("key %q of configmap %s", ref.Key, ref.Name)}, optional)
		}
		return v, true, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := r.secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			return "", false, unlessOptional(err, optional)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return "", false, unlessOptional(missing{fmt.Sprintf("key %q of secret %s", ref.Key, ref.Name)}, optional)
		}
		return string(v), true, nil
	case from.FieldRef != nil:
		v, err := FieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := ResourceValue(c, from.ResourceFieldRef)
		return v, err == nil, err
	}
	return "", false, fmt.Errorf("a reference kt does not know")
}

// errMissing marks a ConfigMap, Secret or key that is not there: an optional reference to it
// is left out without a word, as the kubelet does.
var errMissing = errors.New("missing")

type missing struct{ what string }

func (m missing) Error() string     { return m.what + " not found" }
func (m missing) Is(err error) bool { return err == errMissing }

func unlessOptional(err error, optional bool) error {
	if optional && errors.Is(err, errMissing) {
		return nil
	}
	return err
}

func (r *Resolver) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return get(ctx, r, &r.configMaps, "configmap", ns, name, r.Client.CoreV1().ConfigMaps(ns).Get)
}

func (r *Resolver) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return get(ctx, r, &r.secrets, "secret", ns, name, r.Client.CoreV1().Secrets(ns).Get)
}

// get reads an object once, and remembers what came back, an error included.
func get[T any](ctx context.Context, r *Resolver, cache *map[string]*T, kind, ns, name string, fetch func(context.Context, string, metav1.GetOptions) (*T, error)) (*T, error) {
	if err, ok := r.errs[kind+"/"+name]; ok {
		return nil, err
	}
	if o, ok := (*cache)[name]; ok {
		return o, nil
	}
	if *cache == nil {
		*cache = map[string]*T{}
	}
	if r.errs == nil {
		r.errs = map[string]error{}
	}
	o, err := fetch(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		err = missing{kind + " " + name}
	case apierrors.IsForbidden(err):
		err = fmt.Errorf("you may not get %ss in namespace %s (ask for get on them, see docs/rbac.yaml)", kind, ns)
	}
	if err != nil {
		r.errs[kind+"/"+name] = err
		return nil, err
	}
	(*cache)[name] = o
	return o, nil
}

var fieldPath = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

// FieldValue is what the downward API gives for path.
func FieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		var ips []string
		for _, ip := range pod.Status.HostIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	if m := fieldPath.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("field %q is not one the downward API gives", path)
}

// ResourceValue is what the downward API gives for a container's request or limit: the
// quantity divided by the divisor, rounded up. A limit that is not set is the node's
// allocatable amount, which the pod does not tell: it is left out.
func ResourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || kind != "limits" && kind != "requests" {
		return "", fmt.Errorf("resource %q is not one the downward API gives", ref.Resource)
	}
	list := c.Resources.Requests
	if kind == "limits" {
		list = c.Resources.Limits
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		if kind == "requests" {
			return "0", nil
		}
		return "", fmt.Errorf("container %s sets no %s (the value would be the node's allocatable amount)", c.Name, ref.Resource)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	return strconv.FormatInt(int64(v), 10), nil
}

// expand replaces $(NAME) with the value of an earlier variable, as the kubelet does: $$ is a
// literal $, and a reference to a variable not (yet) defined stays as it is.
func expand(s string, vars []Var, index map[string]int) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if j, ok := index[name]; ok {
				b.WriteString(vars[j].Value)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// Formats are the output formats Write takes.
var Formats = []string{"dotenv", "json", "sh"}

// Write prints vars as format: dotenv (KEY=value, double-quoted with escapes when needed),
// json (one object), or sh (export lines to eval).
func Write(w io.Writer, vars []Var, format string) error {
	switch format {
	case "dotenv":
		for _, v := range vars {
			fmt.Fprintf(w, "%s=%s\n", v.Name, dotenvQuote(v.Value))
		}
	case "sh":
		for _, v := range vars {
			fmt.Fprintf(w, "export %s=%s\n", v.Name, shQuote(v.Value))
		}
	case "json":
		m := map[string]string{}
		for _, v := range vars {
			m[v.Name] = v.Value
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	default:
		return fmt.Errorf("output %q: use one of %s", format, strings.Join(Formats, ", "))
	}
	return nil
}

var plain = regexp.MustCompile(`^[A-Za-z0-9_./:@%+,=-]*$`)

func dotenvQuote(s string) string {
	if plain.MatchString(s) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "$", `\$`)
	return `"` + r.Replace(s) + `"`
}

func shQuote(s string) string {
	if s != "" && plain.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
