package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/watch"
)

func (c *Controller) processStatus(ctx context.Context) bool {
	return processNext(ctx, c.statuses, c.writeStatus, func(key types.NamespacedName, err error) {
		// Conflicts with a stale cached Bundle are expected; the retry reads anew.
		c.logger.V(2).Info("Status write failed; retrying", "bundle", key, "err", err)
	})
}

// writeStatus computes a Bundle's status and writes it when it changed.
// The state is copied under the lock; readiness is read from the caches
// and the status computed outside it.
func (c *Controller) writeStatus(ctx context.Context, key types.NamespacedName) error {
	u, b, err := c.bundleFromCache(key)
	if err != nil || u == nil || u.GetDeletionTimestamp() != nil {
		return err
	}
	in, ok := c.snapshot(key)
	if !ok {
		return nil
	}
	for i := range in.objects {
		in.objects[i].readiness = c.readiness(in.objects[i])
	}
	status := computeStatus(in, b.Status, time.Now())
	c.publishMetrics(key, status)
	if equalJSON(status, b.Status) {
		return nil
	}
	// The whole status, replaced by a JSON patch without a resource
	// version: the agent is its only writer, and an update's precondition
	// failed again and again while a flood of edits kept the Bundle cache
	// a step behind.
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/status", "value": status}})
	if err != nil {
		return err
	}
	_, err = c.sourceClient().Resource(manifests.BundleGVR).Namespace(key.Namespace).
		Patch(ctx, key.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: c.applier.FieldManager()}, "status")
	if err != nil {
		return fmt.Errorf("bundle %s: status update: %w", key, err)
	}
	c.connected()
	return nil
}

// snapshot copies what the status of a Bundle is computed from.
func (c *Controller) snapshot(key types.NamespacedName) (statusInput, bool) {
	s := c.state(key)
	if s == nil {
		return statusInput{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := statusInput{
		generation: s.generation, declared: s.declared, renderFailures: s.renderFailures,
		paused: s.spec.Paused, detectOnly: s.spec.Drift.DetectOnly(), anyApplied: len(s.applied) > 0,
		corrections: s.corrections, lastApplied: s.lastApplied, lastDrift: s.lastDrift,
		bundleErrors:  append([]string(nil), s.bundleErrors...),
		refused:       s.refused,
		customization: s.spec.Customized.Name, waiting: s.waiting,
		problems: make(map[manifests.ObjectRef]problem, len(s.problems)),
		drifted:  make(map[manifests.ObjectRef]Finding, len(s.drifted)),
		objects:  make([]objectStatus, 0, len(s.desired)),
	}
	for ref, p := range s.problems {
		in.problems[ref] = p
	}
	for ref, d := range s.drifted {
		in.drifted[ref] = d.finding
	}
	for k, f := range s.fights {
		in.fights = append(in.fights, fightStatus{key: k, fight: fight{backoff: f.backoff, until: f.until, last: f.last}})
	}
	for _, cr := range s.crashes {
		in.crashes = append(in.crashes, cr)
	}
	for ref, d := range s.desired {
		in.objects = append(in.objects, objectStatus{ref: ref, apiVersion: d.APIVersion, gvr: d.GVR, applied: s.applied[ref] != nil})
	}
	return in, true
}

// readiness returns the kstatus verdict on an object from the cache: nil
// (ready) for kinds that are ready once they exist.
func (c *Controller) readiness(o objectStatus) *watch.Readiness {
	if !o.applied || !watch.NeedsStatus(o.gvr) {
		return nil
	}
	obj, ok := c.watches.Get(o.gvr, o.ref.Namespace, o.ref.Name)
	if !ok {
		return &watch.Readiness{Status: "NotFound", Message: "not in the cache yet"}
	}
	return obj.Readiness
}

// publishMetrics sets a Bundle's gauges.
func (c *Controller) publishMetrics(key types.NamespacedName, st manifests.BundleStatus) {
	ns, name := key.Namespace, key.Name
	ready := 0.0
	if meta.IsStatusConditionTrue(st.Conditions, manifests.ConditionReady) {
		ready = 1
	}
	c.metrics.BundleReady.WithLabelValues(ns, name).Set(ready)
	for state, v := range map[string]int{
		metrics.StateReady: st.Summary.Ready, metrics.StateNotReady: st.Summary.NotReady,
		metrics.StateMissing: st.Summary.Missing, metrics.StateDrifted: st.Summary.Drifted,
		metrics.StateConflict: st.Summary.Conflicts, metrics.StateFailed: st.Summary.Failed,
	} {
		c.metrics.BundleResources.WithLabelValues(ns, name, state).Set(float64(v))
	}
}

// equalJSON compares two statuses as the API server stores them (times in
// seconds, empty lists absent).
func equalJSON(a, b manifests.BundleStatus) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
