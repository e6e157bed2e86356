package drift

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/drift/status"
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

// statusCoalesce is how long a status change that an informer event or a
// correction caused waits before it is written: a drift and its
// correction, milliseconds apart, or a Deployment's readiness changing
// several times while its Pods start, become one write instead of several,
// and the write comes after the correction instead of beside it (a status
// write rewrites the whole Bundle, manifests included, and the API server
// sends it to every Bundle watcher). A sync's end, a render failure and a
// refusal are written at once.
const statusCoalesce = 250 * time.Millisecond

// statusSoon schedules a Bundle's status write within statusCoalesce; a
// write already scheduled sooner stays, and writes what is true then.
func (c *Controller) statusSoon(key types.NamespacedName) { c.statuses.AddAfter(key, statusCoalesce) }

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
	for i := range in.Objects {
		in.Objects[i].Readiness = c.readiness(in.Objects[i])
	}
	st := status.Compute(in, b.Status, time.Now())
	c.publishMetrics(key, st)
	if status.Equal(st, b.Status) {
		return nil
	}
	// The whole status, replaced by a JSON patch without a resource
	// version: the agent is its only writer, and an update's precondition
	// failed again and again while a flood of edits kept the Bundle cache
	// a step behind.
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/status", "value": st}})
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
func (c *Controller) snapshot(key types.NamespacedName) (status.Input, bool) {
	s := c.state(key)
	if s == nil {
		return status.Input{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := status.Input{
		Generation: s.generation, Declared: s.declared, RenderFailures: s.renderFailures,
		Paused: s.spec.Paused, DetectOnly: s.spec.Drift.DetectOnly(), AnyApplied: len(s.applied) > 0,
		Corrections: s.corrections, LastApplied: s.lastApplied, LastDrift: s.lastDrift,
		BundleErrors:  append([]string(nil), s.bundleErrors...),
		Refused:       s.refused,
		Customization: s.spec.Customized.Name, Waiting: s.waiting,
		GuardWritten: s.guardHash != "", GuardError: s.guardErr, Autoscaled: c.autoscaled(s),
		Problems: make(map[manifests.ObjectRef]status.Problem, len(s.problems)),
		Drifted:  make(map[manifests.ObjectRef]detect.Finding, len(s.drifted)),
		Objects:  make([]status.Object, 0, len(s.desired)),
	}
	if s.spec.Drift.Guarded() {
		in.Guard = s.spec.Drift.Mode
	}
	for ref, p := range s.problems {
		in.Problems[ref] = p
	}
	for ref, d := range s.drifted {
		in.Drifted[ref] = d.finding
	}
	for k, f := range s.fights {
		in.Fights = append(in.Fights, status.Fight{FightKey: k, Backoff: f.Backoff})
	}
	for _, cr := range s.crashes {
		in.Crashes = append(in.Crashes, cr)
	}
	for ref, d := range s.desired {
		in.Objects = append(in.Objects, status.Object{Ref: ref, APIVersion: d.APIVersion, GVR: d.GVR, Applied: s.applied[ref] != nil})
	}
	return in, true
}

// readiness returns the kstatus verdict on an object from the cache: nil
// (ready) for kinds that are ready once they exist.
func (c *Controller) readiness(o status.Object) *watch.Readiness {
	if !o.Applied || !watch.NeedsStatus(o.GVR) {
		return nil
	}
	obj, ok := c.watches.Get(o.GVR, o.Ref.Namespace, o.Ref.Name)
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
