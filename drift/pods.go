package drift

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/drift/status"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

// workloadKinds own Pods, directly or through a ReplicaSet.
var workloadKinds = map[schema.GroupKind]bool{
	{Group: "apps", Kind: "Deployment"}: true, {Group: "apps", Kind: "StatefulSet"}: true,
	{Group: "apps", Kind: "DaemonSet"}: true, {Group: "apps", Kind: "ReplicaSet"}: true,
	{Group: "batch", Kind: "Job"}: true,
}

// podNamespaces returns the namespaces that hold owned workloads. The
// caller holds c.mu (and it takes each state's).
func (c *Controller) podNamespaces() map[string]bool {
	out := map[string]bool{}
	for _, s := range c.states {
		s.mu.Lock()
		for ref := range s.desired {
			if workloadKinds[ref.GroupKind()] && ref.Namespace != "" {
				out[ref.Namespace] = true
			}
		}
		s.mu.Unlock()
	}
	return out
}

// watchPods keeps a Pod informer on exactly the namespaces with owned
// workloads.
func (c *Controller) watchPods() {
	c.mu.Lock()
	nss := c.podNamespaces()
	c.mu.Unlock()
	for ns := range nss {
		c.watches.EnsurePods(ns)
	}
	c.watches.StopPods(nss)
}

// OnPod implements watch.Handler: a Pod behind an owned workload changed.
// A crash is handed to processCrash: finding its owner may take an API
// read, which must not hold up the informer.
func (c *Controller) OnPod(obj *watch.Object) {
	_, crashed := status.CrashOf(obj.Pod)
	podKey := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	if !crashed || obj.Deleting {
		c.clearCrash(podKey, obj.UID, obj.Deleting)
		return
	}
	c.mu.Lock()
	c.crashing[podKey] = obj
	c.mu.Unlock()
	c.crashQueue.Add(podKey)
}

// OnPodDeleted implements watch.Handler: a Pod behind an owned workload
// is gone — evicted or failed and deleted by its controller, or replaced —
// and its crash with it.
func (c *Controller) OnPodDeleted(obj *watch.Object) {
	c.clearCrash(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, obj.UID, true)
}

// processCrash records one crashing Pod against its Bundle.
func (c *Controller) processCrash(ctx context.Context) bool {
	return processNext(ctx, c.crashQueue, c.recordCrash, func(key types.NamespacedName, err error) {
		c.logger.V(2).Info("Cannot attribute a crashing Pod; retrying", "pod", key, "err", err)
	})
}

// recordCrash marks the Bundle behind a crashing Pod not ready, counts the
// crash once per failed run and re-syncs the Bundle at once.
func (c *Controller) recordCrash(ctx context.Context, podKey types.NamespacedName) error {
	c.mu.Lock()
	obj := c.crashing[podKey]
	delete(c.crashing, podKey)
	c.mu.Unlock()
	if obj == nil {
		return nil // healthy again, or gone, since it was queued
	}
	crash, _ := status.CrashOf(obj.Pod)
	owner, ok, err := c.podOwner(ctx, obj)
	if err != nil || !ok {
		return err
	}
	s, ref, found := c.lookup(owner.gvr, owner.ref.Namespace, owner.ref.Name, nil)
	if !found {
		return nil
	}
	c.mu.Lock()
	runs := c.crashRuns[obj.UID]
	if runs == nil {
		runs = map[string]bool{}
		c.crashRuns[obj.UID] = runs
	}
	isNew := !runs[crash.Run]
	runs[crash.Run] = true
	c.mu.Unlock()
	s.mu.Lock()
	s.crashes[podKey] = status.PodCrash{Owner: ref, Pod: obj.Name, Crash: crash}
	key, apiVersion := s.key, s.desired[ref].APIVersion
	s.mu.Unlock()
	c.statuses.Add(key)
	if !isNew {
		return nil
	}
	c.metrics.PodCrashes.WithLabelValues(key.Namespace, key.Name, crash.Reason).Inc()
	c.objectEvent(key, apiVersion, ref, corev1.EventTypeWarning, "PodCrashed", "Resync", "%s: pod %s %s", ref, obj.Name, crash)
	// Re-sync at once: re-apply what drifted, recompute readiness.
	c.queue.Add(key)
	return nil
}

func (c *Controller) clearCrash(pod types.NamespacedName, uid types.UID, gone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.crashing, pod)
	if gone {
		delete(c.crashRuns, uid)
	}
	for _, s := range c.states {
		s.mu.Lock()
		if _, ok := s.crashes[pod]; ok {
			delete(s.crashes, pod)
			c.statuses.Add(s.key)
		}
		s.mu.Unlock()
	}
}

type ownerRef struct {
	gvr schema.GroupVersionResource
	ref manifests.ObjectRef
}

// podOwner finds the owned object behind a Pod: its controller, or for a
// ReplicaSet's Pod, the ReplicaSet's controller (one metadata read per
// ReplicaSet, remembered: only crashing Pods ask).
func (c *Controller) podOwner(ctx context.Context, pod *watch.Object) (ownerRef, bool, error) {
	ctl := controllerOf(pod.OwnerReferences)
	if ctl == nil {
		return ownerRef{}, false, nil
	}
	if ctl.Kind == "ReplicaSet" {
		rsKey := types.NamespacedName{Namespace: pod.Namespace, Name: ctl.Name}
		c.mu.Lock()
		dep, known := c.rsOwners[rsKey]
		c.mu.Unlock()
		if !known {
			rs, err := c.applier.Get(ctx, apply.Desired{
				Ref: manifests.ObjectRef{Group: "apps", Kind: "ReplicaSet", Namespace: pod.Namespace, Name: ctl.Name},
				GVR: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}})
			if err != nil || rs == nil {
				return ownerRef{}, false, err
			}
			if d := controllerOf(rs.GetOwnerReferences()); d != nil && d.Kind == "Deployment" {
				dep = d.Name
			}
			c.mu.Lock()
			c.rsOwners[rsKey] = dep
			c.mu.Unlock()
		}
		if dep != "" {
			o, ok := c.ownerFor("apps", "Deployment", pod.Namespace, dep)
			return o, ok, nil
		}
	}
	gv, _ := schema.ParseGroupVersion(ctl.APIVersion)
	o, ok := c.ownerFor(gv.Group, ctl.Kind, pod.Namespace, ctl.Name)
	return o, ok, nil
}

// ownerFor resolves a group-kind to the resource type it is watched as.
func (c *Controller) ownerFor(group, kind, namespace, name string) (ownerRef, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for gvr, k := range c.kinds {
		if gvr.Group == group && k == kind {
			return ownerRef{gvr: gvr, ref: manifests.ObjectRef{Group: group, Kind: kind, Namespace: namespace, Name: name}}, true
		}
	}
	return ownerRef{}, false
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	return nil
}

// podFailed reports an owned bare Pod that failed as drift: a failed Pod
// never runs again, so its correction deletes it, and the deletion's
// correction re-creates it.
func (c *Controller) podFailed(gvr schema.GroupVersionResource, obj *watch.Object) {
	now := time.Now()
	s, ref, ok := c.lookup(gvr, obj.Namespace, obj.Name, obj.Labels())
	if !ok || obj.Deleting {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A Pod that fails while a release runs is Helm's to handle (the
	// recheck after it looks again).
	if s.applied[ref] == nil || s.ours(ref) {
		return
	}
	if d, ok := s.drifted[ref]; ok && d.finding.Cause == detect.CausePodFailed {
		return
	}
	c.driftFound(s, ref, detect.PodFailed(), now, "")
}
