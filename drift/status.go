package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/watch"
)

// writeStatus computes a Bundle's status and writes it when it changed.
func (c *Controller) writeStatus(ctx context.Context, key types.NamespacedName) error {
	u, b, err := c.bundleFromCache(key)
	if err != nil || u == nil || u.GetDeletionTimestamp() != nil {
		return err
	}
	c.mu.Lock()
	s := c.states[key]
	if s == nil {
		c.mu.Unlock()
		return nil
	}
	status := s.status(b.Status, time.Now(), c.readiness)
	c.publishMetrics(s, status)
	c.mu.Unlock()

	if equalJSON(status, b.Status) {
		return nil
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		return err
	}
	out := u.DeepCopy()
	if err := unstructured.SetNestedField(out.Object, content, "status"); err != nil {
		return err
	}
	_, err = c.source.Resource(manifests.BundleGVR).Namespace(key.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: c.applier.FieldManager()})
	if err != nil {
		return fmt.Errorf("bundle %s: status update: %w", key, err)
	}
	c.connected()
	return nil
}

// status computes the Bundle's status from the state; prev supplies the
// conditions' transition times. The caller holds c.mu.
func (s *bundleState) status(prev manifests.BundleStatus, now time.Time, readiness func(apply.Desired) *watch.Readiness) manifests.BundleStatus {
	st := manifests.BundleStatus{
		ObservedGeneration: s.generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		DriftCorrections:   s.corrections,
		LastAppliedTime:    prev.LastAppliedTime,
		LastDriftTime:      prev.LastDriftTime,
	}
	if !s.lastApplied.IsZero() {
		t := metav1.NewTime(s.lastApplied.Truncate(time.Second))
		st.LastAppliedTime = &t
	}
	if !s.lastDrift.IsZero() {
		t := metav1.NewTime(s.lastDrift.Truncate(time.Second))
		st.LastDriftTime = &t
	}

	var items []manifests.ResourceStatus
	add := func(ref manifests.ObjectRef, rs manifests.ResourceStatus) {
		d := s.desired[ref]
		rs.Kind, rs.Namespace, rs.Name = ref.Kind, ref.Namespace, ref.Name
		if d.APIVersion != "" {
			rs.APIVersion = d.APIVersion
		} else if ref.Group != "" {
			rs.APIVersion = ref.Group
		}
		items = append(items, rs)
	}
	sum := manifests.Summary{Desired: s.declared}
	for ref, p := range s.problems {
		switch p.state {
		case manifests.StateConflict:
			sum.Conflicts++
		default:
			sum.Failed++
		}
		add(ref, manifests.ResourceStatus{State: p.state, ChangedBy: p.manager, Message: p.message})
	}
	fighting := map[manifests.ObjectRef]string{}
	for k, f := range s.fights {
		if now.Before(f.until) {
			fighting[k.Ref] = fmt.Sprintf("%s: %s is taken again and again by %s; corrections back off %s. To let %s own it, add to spec.drift.ignore: %s",
				k.Ref, k.Field, k.Manager, f.backoff, k.Manager, ignoreSuggestion(k.Ref, k.Field))
		}
	}
	for ref, d := range s.drifted {
		if _, isProblem := s.problems[ref]; isProblem {
			continue
		}
		state := manifests.StateDrifted
		if d.finding.Managers[0] == ManagerDeleted {
			state = manifests.StateMissing
			sum.Missing++
		} else {
			sum.Drifted++
		}
		msg := "changed by " + d.finding.ChangedBy()
		if f, ok := fighting[ref]; ok {
			msg = f
		}
		add(ref, manifests.ResourceStatus{State: state, Fields: d.finding.Fields, ChangedBy: d.finding.ChangedBy(), Message: msg})
	}
	crashed := map[manifests.ObjectRef]podCrashState{}
	for _, c := range s.crashes {
		crashed[c.owner] = c
	}
	for ref, d := range s.desired {
		if _, p := s.problems[ref]; p {
			continue
		}
		if _, d := s.drifted[ref]; d {
			continue
		}
		if s.applied[ref] == nil {
			sum.NotReady++
			continue
		}
		if c, ok := crashed[ref]; ok {
			sum.NotReady++
			add(ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: fmt.Sprintf("pod %s %s", c.pod, c.crash)})
			continue
		}
		if r := readiness(d); !r.Ready() {
			sum.NotReady++
			msg := r.Status
			if r.Message != "" {
				msg += ": " + r.Message
			}
			add(ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: msg})
			continue
		}
		sum.Ready++
	}
	sum.Failed += s.decodeFailures
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	if len(items) > manifests.MaxStatusResources {
		items = items[:manifests.MaxStatusResources]
	}
	st.Resources = items
	st.Summary = sum

	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason,
			Message: truncate(msg, 1024), ObservedGeneration: s.generation, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))})
	}
	var errs []string
	errs = append(errs, s.bundleErrors...)
	for _, it := range items {
		if it.State == manifests.StateFailed || it.State == manifests.StateConflict {
			errs = append(errs, it.Message)
		}
	}
	switch {
	case len(errs) > 0:
		reason := "ApplyFailed"
		if sum.Conflicts > 0 && sum.Failed == 0 && len(s.bundleErrors) == 0 {
			reason = "Conflict"
		}
		set(manifests.ConditionSynced, false, reason, strings.Join(errs, "; "))
	case s.spec.Paused:
		set(manifests.ConditionSynced, false, "Paused", "spec.paused is set: changes are not applied")
	default:
		set(manifests.ConditionSynced, true, "Applied", fmt.Sprintf("%d objects applied", sum.Ready+sum.Drifted+sum.Missing))
	}
	if n := sum.Drifted + sum.Missing; n > 0 {
		var parts []string
		for _, it := range items {
			if it.State == manifests.StateDrifted || it.State == manifests.StateMissing {
				parts = append(parts, fmt.Sprintf("%s/%s %s: %s by %s", it.Kind, it.Name, it.State, strings.Join(it.Fields, ","), it.ChangedBy))
			}
		}
		reason := "DriftDetected"
		if s.spec.Drift.DetectOnly() {
			reason = "DriftDetectedNotCorrected"
		}
		set(manifests.ConditionDrifted, true, reason, strings.Join(parts, "; "))
	} else {
		set(manifests.ConditionDrifted, false, "InSync", "every owned field holds what was applied")
	}
	if len(fighting) > 0 {
		var msgs []string
		for _, m := range fighting {
			msgs = append(msgs, m)
		}
		sort.Strings(msgs)
		set(manifests.ConditionStalled, true, "FieldFight", strings.Join(msgs, "; "))
	} else {
		set(manifests.ConditionStalled, false, "Progressing", "")
	}
	// A paused Bundle is not synced, but what it applied may well be ready.
	synced := meta.IsStatusConditionTrue(st.Conditions, manifests.ConditionSynced) ||
		(s.spec.Paused && len(errs) == 0 && len(s.applied) > 0)
	if synced && sum.Drifted+sum.Missing == 0 && sum.NotReady == 0 {
		set(manifests.ConditionReady, true, "Ready", fmt.Sprintf("%d/%d objects applied and in sync", sum.Ready, sum.Desired))
	} else {
		var why []string
		for _, it := range items {
			if it.State == manifests.StateNotReady && len(why) < 3 {
				why = append(why, fmt.Sprintf("%s/%s: %s", it.Kind, it.Name, it.Message))
			}
		}
		msg := fmt.Sprintf("%d/%d objects ready", sum.Ready, sum.Desired)
		if len(why) > 0 {
			msg += "; " + strings.Join(why, "; ")
		}
		set(manifests.ConditionReady, false, "NotReady", msg)
	}
	// SetStatusCondition keeps the transition time of an unchanged status,
	// so an unchanged state produces an equal status and no write.
	return st
}

// readiness returns the kstatus verdict on a desired object from the
// cache: nil (ready) for kinds that are ready once they exist. The caller
// holds c.mu.
func (c *Controller) readiness(d apply.Desired) *watch.Readiness {
	if !watch.NeedsStatus(d.GVR) {
		return nil
	}
	obj, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
	if !ok {
		return &watch.Readiness{Status: "NotFound", Message: "not in the cache yet"}
	}
	return obj.Readiness
}

// publishMetrics sets a Bundle's gauges. The caller holds c.mu.
func (c *Controller) publishMetrics(s *bundleState, st manifests.BundleStatus) {
	ns, name := s.key.Namespace, s.key.Name
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// equalJSON compares two statuses as the API server stores them (times in
// seconds, empty lists absent).
func equalJSON(a, b manifests.BundleStatus) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
