// Package mount materializes the files a container of a pod sees through its ConfigMap,
// Secret, downward-API and projected volumes in a private local directory, at their mount
// paths, and keeps them current as the kubelet does: each mount is a directory whose files
// point through a "..data" link that is swapped in one rename when the content changes.
package mount

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-kt/kt/pkg/envvars"
)

// File is one file of a mount: its path inside the mount, its content and its mode.
type File struct {
	Path string
	Data []byte
	Mode uint32
}

// Mount is what one volume mount of the container shows at Path.
type Mount struct {
	Path   string // the container's mount path
	Volume string
	// File is set for a subPath mount of a single file: the mount is that file, not a
	// directory.
	File  bool
	Files []File
}

// Resolver reads what a container's volume mounts show, from the API server.
type Resolver struct {
	Client kubernetes.Interface
	// ServiceAccountToken asks for projected service account tokens (a credential, so only
	// when asked): a TokenRequest bound to the pod.
	ServiceAccountToken bool
	// Now is the clock for the tokens' lifetimes (time.Now when nil).
	Now func() time.Time

	mu     sync.Mutex
	tokens map[tokenKey]issuedToken
}

// tokenKey is what makes one projected token differ from another, as for the kubelet.
type tokenKey struct {
	namespace, serviceAccount, audience string
	pod                                 types.UID
	seconds                             int64
}

type issuedToken struct {
	token           string
	issued, expires time.Time
}

// Skipped is a volume mount whose content is not in the API (emptyDir, a PVC, hostPath, CSI…)
// or not copied (a token without ServiceAccountToken).
type Skipped struct {
	Path, Volume, Why string
}

func (s Skipped) String() string { return fmt.Sprintf("%s (%s: %s)", s.Path, s.Volume, s.Why) }

// Resolve returns the container's mounts that can be copied, with their files, and those
// that cannot. An error is one of the API server's: reading a ConfigMap or Secret the pod
// needs (an optional one that is missing is an empty mount, as in the kubelet).
func (r *Resolver) Resolve(ctx context.Context, pod *corev1.Pod, container string) ([]Mount, []Skipped, error) {
	c := envvars.FindContainer(pod, container)
	if c == nil {
		return nil, nil, fmt.Errorf("pod %s has no container %q", pod.Name, container)
	}
	vols := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var mounts []Mount
	var skipped []Skipped
	for _, vm := range c.VolumeMounts {
		v := vols[vm.Name]
		if v == nil {
			continue
		}
		files, why, err := r.volume(ctx, pod, v)
		if err != nil {
			return nil, nil, err
		}
		if tp := tokenPath(v); why == "" && !r.ServiceAccountToken && tp != "" {
			skipped = append(skipped, Skipped{Path: path.Join(vm.MountPath, tp), Volume: vm.Name,
				Why: "a service account token is a credential: pass --with-service-account-token to copy it"})
		}
		if why == "" && vm.SubPathExpr != "" {
			why = "subPathExpr is not expanded"
		}
		if why != "" {
			skipped = append(skipped, Skipped{Path: vm.MountPath, Volume: vm.Name, Why: why})
			continue
		}
		m := Mount{Path: vm.MountPath, Volume: vm.Name, Files: files}
		if vm.SubPath != "" {
			m = subPath(m, path.Clean(vm.SubPath))
		}
		mounts = append(mounts, m)
	}
	return mounts, skipped, nil
}

// subPath narrows m to the file or directory sub of its volume.
func subPath(m Mount, sub string) Mount {
	var files []File
	for _, f := range m.Files {
		if f.Path == sub {
			return Mount{Path: m.Path, Volume: m.Volume, File: true, Files: []File{{Path: "", Data: f.Data, Mode: f.Mode}}}
		}
		if rest, ok := strings.CutPrefix(f.Path, sub+"/"); ok {
			f.Path = rest
			files = append(files, f)
		}
	}
	m.Files = files
	return m
}

// volume returns the files of v, or why they cannot be copied.
func (r *Resolver) volume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) ([]File, string, error) {
	switch {
	case v.ConfigMap != nil:
		s := v.ConfigMap
		return r.configMap(ctx, pod.Namespace, s.Name, s.Items, mode(s.DefaultMode), ptr.Deref(s.Optional, false))
	case v.Secret != nil:
		s := v.Secret
		return r.secret(ctx, pod.Namespace, s.SecretName, s.Items, mode(s.DefaultMode), ptr.Deref(s.Optional, false))
	case v.DownwardAPI != nil:
		fs, err := downward(pod, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
		if err != nil {
			return nil, err.Error(), nil
		}
		return fs, "", nil
	case v.Projected != nil:
		return r.projected(ctx, pod, v.Projected)
	}
	return nil, volumeKind(v) + " has no content in the API", nil
}

func (r *Resolver) projected(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) ([]File, string, error) {
	def := mode(p.DefaultMode)
	var all []File
	for _, s := range p.Sources {
		var fs []File
		var why string
		var err error
		switch {
		case s.ConfigMap != nil:
			fs, why, err = r.configMap(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, def, ptr.Deref(s.ConfigMap.Optional, false))
		case s.Secret != nil:
			fs, why, err = r.secret(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, def, ptr.Deref(s.Secret.Optional, false))
		case s.DownwardAPI != nil:
			fs, err = downward(pod, s.DownwardAPI.Items, def)
			if err != nil {
				why, err = err.Error(), nil
			}
		case s.ServiceAccountToken != nil:
			if !r.ServiceAccountToken {
				// The rest of the volume (a kube-api-access volume's ca.crt and namespace) is
				// still copied.
				continue
			}
			fs, err = r.token(ctx, pod, s.ServiceAccountToken, def)
		default:
			continue // a cluster trust bundle or pod certificate: not copied
		}
		if err != nil || why != "" {
			return nil, why, err
		}
		all = append(all, fs...)
	}
	return all, "", nil
}

func (r *Resolver) configMap(ctx context.Context, ns, name string, items []corev1.KeyToPath, def uint32, optional bool) ([]File, string, error) {
	cm, err := r.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("configmap %s/%s: %w", ns, name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items, def, optional, "configmap "+ns+"/"+name)
}

func (r *Resolver) secret(ctx context.Context, ns, name string, items []corev1.KeyToPath, def uint32, optional bool) ([]File, string, error) {
	s, err := r.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return keyFiles(s.Data, items, def, optional, "secret "+ns+"/"+name)
}

// keyFiles lays out a ConfigMap's or Secret's keys: all of them under their names, or items.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def uint32, optional bool, what string) ([]File, string, error) {
	var fs []File
	if len(items) == 0 {
		for k, v := range data {
			fs = append(fs, File{Path: k, Data: v, Mode: def})
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Sprintf("%s has no key %q", what, it.Key), nil
		}
		m := def
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		fs = append(fs, File{Path: path.Clean(it.Path), Data: v, Mode: m})
	}
	sortFiles(fs)
	return fs, "", nil
}

// downward gives the downward API's files: a field or a container's resource each.
func downward(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def uint32) ([]File, error) {
	var fs []File
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldFile(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := envvars.FindContainer(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, fmt.Errorf("no container %q for %s", it.ResourceFieldRef.ContainerName, it.Path)
			}
			v, err = envvars.ResourceValue(c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		m := def
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		fs = append(fs, File{Path: path.Clean(it.Path), Data: []byte(v), Mode: m})
	}
	sortFiles(fs)
	return fs, nil
}

// fieldFile is a downward-API field as a volume gives it: all labels or annotations as
// key="value" lines, sorted, or one field.
func fieldFile(pod *corev1.Pod, field string) (string, error) {
	var m map[string]string
	switch field {
	case "metadata.labels":
		m = pod.Labels
	case "metadata.annotations":
		m = pod.Annotations
	default:
		return envvars.FieldValue(pod, field)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String(), nil
}

// token asks for a token of the pod's service account, bound to the pod, as the kubelet does.
func (r *Resolver) token(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection, def uint32) ([]File, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	key := tokenKey{pod.Namespace, sa, p.Audience, pod.UID, ptr.Deref(p.ExpirationSeconds, 0)}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A token is asked for again only when 80% of its life has passed, or a day, as the kubelet
	// does: a refresh of the files every few seconds must not mint a credential each time.
	if t, ok := r.tokens[key]; ok {
		life := min(t.expires.Sub(t.issued), 24*time.Hour)
		if now().Before(t.issued.Add(life * 8 / 10)) {
			return []File{{Path: path.Clean(p.Path), Data: []byte(t.token), Mode: def}}, nil
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	out, err := r.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("a token of service account %s/%s: %w", pod.Namespace, sa, err)
	}
	issued, expires := now(), out.Status.ExpirationTimestamp.Time
	if !expires.After(issued) { // no expiry said: the asked-for one, or the API's default hour
		expires = issued.Add(time.Duration(ptr.Deref(p.ExpirationSeconds, 3600)) * time.Second)
	}
	if r.tokens == nil {
		r.tokens = map[tokenKey]issuedToken{}
	}
	r.tokens[key] = issuedToken{out.Status.Token, issued, expires}
	return []File{{Path: path.Clean(p.Path), Data: []byte(out.Status.Token), Mode: def}}, nil
}

// tokenPath is where v projects a service account token, if it does.
func tokenPath(v *corev1.Volume) string {
	if v.Projected == nil {
		return ""
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return s.ServiceAccountToken.Path
		}
	}
	return ""
}

func mode(m *int32) uint32 {
	if m == nil {
		return 0o644
	}
	return uint32(*m)
}

func sortFiles(fs []File) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
}

// volumeKind names a volume's source for a message.
func volumeKind(v *corev1.Volume) string {
	switch {
	case v.EmptyDir != nil:
		return "emptyDir"
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim " + v.PersistentVolumeClaim.ClaimName
	case v.HostPath != nil:
		return "hostPath " + v.HostPath.Path
	case v.CSI != nil:
		return "csi " + v.CSI.Driver
	case v.Ephemeral != nil:
		return "an ephemeral volume"
	case v.Image != nil:
		return "an image volume"
	case v.NFS != nil:
		return "nfs"
	}
	return "its kind of volume"
}
