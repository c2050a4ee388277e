// Package clustertest is a fake cluster for unit tests of code that changes one: a fake
// clientset whose pods start at once (Running, Ready, with an IP), whose Deployments and
// StatefulSets report all their replicas ready, and whose EndpointSlices follow the Services'
// selectors, as the kubelet and the controllers would; a Deployment or StatefulSet scaled
// down loses pods and one scaled up gets new ones (reconciled whenever they or the
// EndpointSlices are read). Pod lists honour metadata.name field selectors, as the API
// server does.
package clustertest

import (
	"fmt"
	"strings"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

var (
	podsGVR = corev1.SchemeGroupVersion.WithResource("pods")
	podsGVK = corev1.SchemeGroupVersion.WithKind("Pod")
	svcsGVR = corev1.SchemeGroupVersion.WithResource("services")
)

// New returns the fake cluster holding objects. Pods among objects keep the status they have.
func New(objects ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objects...)
	c.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		if p.Namespace == "" {
			p.Namespace = a.GetNamespace()
		}
		Start(p, fmt.Sprintf("10.244.0.%d", 100+lastIP.Add(1)%150))
		if err := c.Tracker().Create(podsGVR, p, p.Namespace); err != nil {
			return true, nil, err
		}
		return true, p, nil
	})
	c.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.ListAction).GetListRestrictions()
		name, byName := r.Fields.RequiresExactMatch("metadata.name")
		if !byName {
			return false, nil, nil
		}
		obj, err := c.Tracker().List(podsGVR, podsGVK, a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		out := &corev1.PodList{}
		for _, p := range obj.(*corev1.PodList).Items {
			if p.Name == name && r.Labels.Matches(labels.Set(p.Labels)) {
				out.Items = append(out.Items, p)
			}
		}
		return true, out, nil
	})
	ready := func(a k8stesting.Action) (bool, runtime.Object, error) {
		reconcile(c)
		obj, err := c.Tracker().Get(a.GetResource(), a.GetNamespace(), a.(k8stesting.GetAction).GetName())
		if err != nil {
			return true, nil, err
		}
		switch w := obj.DeepCopyObject().(type) {
		case *appsv1.Deployment:
			w.Status.ReadyReplicas = ptr.Deref(w.Spec.Replicas, 1)
			return true, w, nil
		case *appsv1.StatefulSet:
			w.Status.ReadyReplicas = ptr.Deref(w.Spec.Replicas, 1)
			return true, w, nil
		}
		return false, nil, nil
	}
	c.PrependReactor("get", "deployments", ready)
	c.PrependReactor("get", "statefulsets", ready)
	c.PrependReactor("list", "endpointslices", endpointSlices(c))
	return c
}

// endpointSlices answers a list of a Service's EndpointSlices with one slice of the ready
// pods its selector matches.
func endpointSlices(c *fake.Clientset) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		name, ok := a.(k8stesting.ListAction).GetListRestrictions().Labels.RequiresExactMatch(discoveryv1.LabelServiceName)
		if !ok {
			return false, nil, nil
		}
		reconcile(c)
		out := &discoveryv1.EndpointSliceList{}
		obj, err := c.Tracker().Get(svcsGVR, a.GetNamespace(), name)
		if err != nil {
			return true, out, nil
		}
		svc := obj.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			return true, out, nil
		}
		pods, err := c.Tracker().List(podsGVR, podsGVK, a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		slice := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-fake", Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, p := range pods.(*corev1.PodList).Items {
			if sel.Matches(labels.Set(p.Labels)) && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
			}
		}
		out.Items = append(out.Items, slice)
		return true, out, nil
	}
}

// reconcile makes the pods of each Deployment and StatefulSet as many as its replicas. A pod
// is a workload's when the workload's selector matches it and no other object controls it.
func reconcile(c *fake.Clientset) {
	type workload struct {
		kind     string
		name     string
		replicas int32
		selector *metav1.LabelSelector
		template corev1.PodTemplateSpec
	}
	var ws []workload
	for _, ns := range namespaces(c) {
		if obj, err := c.Tracker().List(appsv1.SchemeGroupVersion.WithResource("deployments"), appsv1.SchemeGroupVersion.WithKind("Deployment"), ns); err == nil {
			for _, d := range obj.(*appsv1.DeploymentList).Items {
				ws = append(ws, workload{"Deployment", d.Namespace + "/" + d.Name, ptr.Deref(d.Spec.Replicas, 1), d.Spec.Selector, d.Spec.Template})
			}
		}
		if obj, err := c.Tracker().List(appsv1.SchemeGroupVersion.WithResource("statefulsets"), appsv1.SchemeGroupVersion.WithKind("StatefulSet"), ns); err == nil {
			for _, s := range obj.(*appsv1.StatefulSetList).Items {
				ws = append(ws, workload{"StatefulSet", s.Namespace + "/" + s.Name, ptr.Deref(s.Spec.Replicas, 1), s.Spec.Selector, s.Spec.Template})
			}
		}
	}
	for _, w := range ws {
		ns, name, _ := strings.Cut(w.name, "/")
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil {
			continue
		}
		obj, err := c.Tracker().List(podsGVR, podsGVK, ns)
		if err != nil {
			continue
		}
		var mine []corev1.Pod
		for _, p := range obj.(*corev1.PodList).Items {
			if ref := metav1.GetControllerOf(&p); sel.Matches(labels.Set(p.Labels)) && (ref == nil || ref.Kind == w.kind && ref.Name == name) {
				mine = append(mine, p)
			}
		}
		for i := int32(len(mine)); i > w.replicas; i-- {
			c.Tracker().Delete(podsGVR, ns, mine[i-1].Name)
		}
		for i := int32(len(mine)); i < w.replicas; i++ {
			p := &corev1.Pod{ObjectMeta: *w.template.ObjectMeta.DeepCopy(), Spec: *w.template.Spec.DeepCopy()}
			p.Namespace, p.Name = ns, fmt.Sprintf("%s-%d", name, lastIP.Add(1))
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: w.kind, Name: name, Controller: ptr.To(true)}}
			Start(p, fmt.Sprintf("10.244.1.%d", lastIP.Load()%250))
			c.Tracker().Create(podsGVR, p, ns)
		}
	}
}

// namespaces are those of every pod and workload (the fake holds no Namespace objects).
func namespaces(c *fake.Clientset) []string {
	seen := map[string]bool{}
	for _, gvk := range []schema.GroupVersionKind{podsGVK, appsv1.SchemeGroupVersion.WithKind("Deployment"), appsv1.SchemeGroupVersion.WithKind("StatefulSet")} {
		gvr, _ := meta.UnsafeGuessKindToResource(gvk)
		obj, err := c.Tracker().List(gvr, gvk, "")
		if err != nil {
			continue
		}
		items, _ := meta.ExtractList(obj)
		for _, it := range items {
			if m, err := meta.Accessor(it); err == nil {
				seen[m.GetNamespace()] = true
			}
		}
	}
	var out []string
	for ns := range seen {
		out = append(out, ns)
	}
	return out
}

var lastIP atomic.Int32

// Start gives p the status of a pod whose containers all run and are ready, at ip.
func Start(p *corev1.Pod, ip string) {
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	p.Status.ContainerStatuses = nil
	for _, ct := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: ct.Name, Image: ct.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
}
