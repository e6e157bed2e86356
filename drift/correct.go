package drift

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// lookup finds the Bundle state and reference of a cached object: through
// its Bundle label, or for a deleted object (labels nil) in every Bundle.
// Only objects that a Bundle declares or applied are found. The caller
// holds c.mu.
func (c *Controller) lookup(gvr schema.GroupVersionResource, namespace, name string, labels map[string]string) (*bundleState, manifests.ObjectRef, bool) {
	kind, ok := c.kinds[gvr]
	if !ok {
		return nil, manifests.ObjectRef{}, false
	}
	ref := manifests.ObjectRef{Group: gvr.Group, Kind: kind, Namespace: namespace, Name: name}
	if labels != nil {
		if key, ok := c.byLabel[labels[ownership.BundleLabel]]; ok {
			if s, ok := c.states[key]; ok {
				return s, ref, s.has(ref)
			}
		}
		return nil, ref, false
	}
	for _, s := range c.states {
		if s.has(ref) {
			return s, ref, true
		}
	}
	return nil, ref, false
}

// check compares a cached object with what we applied. It makes no API
// call: the verdict comes from managedFields alone.
func (c *Controller) check(gvr schema.GroupVersionResource, obj *watch.Object) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ref, ok := c.lookup(gvr, obj.Namespace, obj.Name, obj.Labels())
	if !ok || s.inFlight[ref] || obj.Deleting {
		return
	}
	applied := s.applied[ref]
	if applied == nil {
		return
	}
	if !newer(obj.ResourceVersion, applied.ResourceVersion) {
		// Our own write, or an event from before it, still in the queue:
		// what it shows was overwritten by our apply.
		return
	}
	fields, err := applied.FieldSet()
	if err != nil {
		c.logger.Error(err, "Cannot read the recorded fields", "object", ref.String())
		return
	}
	f, err := Detect(fields, obj.ManagedFields(), c.applier.FieldManager(), s.ignoreFor(ref))
	if err != nil {
		c.logger.Error(err, "Cannot read managedFields", "object", ref.String())
		return
	}
	if !f.Drifted() {
		// Changes to fields we do not own are not our business; remember
		// the version so that the next event is cheap.
		applied.ResourceVersion = obj.ResourceVersion
		if _, was := s.drifted[ref]; was {
			delete(s.drifted, ref)
			c.statuses.Add(s.key)
		}
		return
	}
	c.driftFound(s, ref, f, now)
}

// onGone handles an owned object that was deleted.
func (c *Controller) onGone(gvr schema.GroupVersionResource, namespace, name string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ref, ok := c.lookup(gvr, namespace, name, nil)
	if !ok || s.inFlight[ref] || s.applied[ref] == nil {
		return
	}
	c.driftFound(s, ref, Deleted(), now)
}

// driftFound records a drift, reports it and schedules the correction.
// The caller holds c.mu.
func (c *Controller) driftFound(s *bundleState, ref manifests.ObjectRef, f Finding, now time.Time) {
	prev, seenBefore := s.drifted[ref]
	s.drifted[ref] = driftInfo{finding: f, seen: now}
	s.lastDrift = now
	if !seenBefore || prev.finding.ChangedBy() != f.ChangedBy() || strings.Join(prev.finding.Fields, ",") != strings.Join(f.Fields, ",") {
		for _, m := range f.Managers {
			c.metrics.DriftDetected.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, m).Inc()
		}
		if f.Managers[0] == ManagerDeleted {
			c.event(s.key, corev1.EventTypeWarning, "DriftDetected", "%s was deleted", ref)
		} else {
			c.event(s.key, corev1.EventTypeWarning, "DriftDetected", "%s: %s changed by %s",
				ref, strings.Join(f.Fields, ", "), f.ChangedBy())
		}
	}
	c.statuses.Add(s.key)
	if s.spec.Paused || s.spec.Drift.DetectOnly() {
		return
	}
	fix := fixKey{Bundle: s.key, Ref: ref}
	if delay := c.recordFight(s, ref, f, now); delay > 0 {
		c.fixes.AddAfter(fix, delay)
		return
	}
	c.fixes.Add(fix)
}

// recordFight counts takes of each field by each manager and returns how
// long to wait before correcting again; 0 means at once. The caller holds
// c.mu.
func (c *Controller) recordFight(s *bundleState, ref manifests.ObjectRef, f Finding, now time.Time) time.Duration {
	var wait time.Duration
	for _, m := range f.Managers {
		if m == ManagerDeleted || m == ManagerRemoved {
			continue
		}
		for _, field := range f.Fields {
			k := fightKey{Ref: ref, Field: field, Manager: m}
			ft := s.fights[k]
			if ft == nil {
				ft = &fight{}
				s.fights[k] = ft
			}
			if now.Before(ft.until) {
				if d := ft.until.Sub(now); d > wait {
					wait = d
				}
				continue
			}
			hits := ft.hits[:0]
			for _, h := range ft.hits {
				if now.Sub(h) < c.opts.FightWindow {
					hits = append(hits, h)
				}
			}
			ft.hits = append(hits, now)
			if len(ft.hits) < c.opts.FightThreshold {
				continue
			}
			if ft.backoff == 0 {
				ft.backoff = c.opts.FightBackoff
				c.metrics.FieldFights.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, m).Inc()
				c.event(s.key, corev1.EventTypeWarning, "FightDetected",
					"%s: %s is taken again and again by %s; backing off. To let %s own it, add to spec.drift.ignore: %s",
					ref, field, m, m, ignoreSuggestion(ref, field))
			} else {
				ft.backoff = min(2*ft.backoff, c.opts.FightMaxBackoff)
			}
			ft.until = now.Add(ft.backoff)
			if ft.backoff > wait {
				wait = ft.backoff
			}
		}
	}
	return wait
}

func ignoreSuggestion(ref manifests.ObjectRef, field string) string {
	return fmt.Sprintf("{group: %q, kind: %s, name: %s, fieldPaths: [%q]}", ref.Group, ref.Kind, ref.Name, field)
}

// processFix corrects one drifted object by re-applying it.
func (c *Controller) processFix(ctx context.Context) bool {
	return processNext(ctx, c.fixes, c.countedFix, func(key fixKey, err error) {
		c.logger.Error(err, "Correction failed; retrying", "bundle", key.Bundle, "object", key.Ref.String())
	})
}

func (c *Controller) correct(ctx context.Context, key fixKey) error {
	c.mu.Lock()
	s := c.states[key.Bundle]
	if s == nil {
		c.mu.Unlock()
		return nil
	}
	info, drifted := s.drifted[key.Ref]
	d, desired := s.desired[key.Ref]
	if !drifted || !desired || s.inFlight[key.Ref] || s.spec.Paused || s.spec.Drift.DetectOnly() {
		c.mu.Unlock()
		return nil
	}
	force := s.spec.Drift.ForceEnabled()
	ignore := s.ignoreFor(key.Ref)
	s.inFlight[key.Ref] = true
	c.mu.Unlock()

	d, err := c.render(s, d)
	if err != nil {
		c.mu.Lock()
		delete(s.inFlight, key.Ref)
		c.mu.Unlock()
		if errors.Is(err, errBundleChanged) {
			c.queue.Add(key.Bundle) // the sync applies what the Bundle says now
			return nil
		}
		return err
	}

	if info.finding.Managers[0] == ManagerFailed {
		return c.deleteFailed(ctx, s, key, d)
	}
	if len(info.finding.Foreign) > 0 && force {
		if err := c.applier.ReplaceListItems(ctx, d, info.finding.Foreign); err != nil {
			c.mu.Lock()
			delete(s.inFlight, key.Ref)
			c.mu.Unlock()
			return err
		}
	}
	res := c.applier.Apply(ctx, c.withoutLostIgnored(d, ignore), force)
	c.observeApply(res)

	c.mu.Lock()
	delete(s.inFlight, key.Ref)
	result := metrics.ResultSuccess
	if res.Err != nil {
		result = metrics.ResultError
		c.recordApplyError(s, res)
	} else {
		s.applied[key.Ref] = res.Applied
		delete(s.drifted, key.Ref)
		delete(s.problems, key.Ref)
		s.corrections++
		s.lastApplied = time.Now()
		c.metrics.DriftCorrectionSeconds.Observe(time.Since(info.seen).Seconds())
	}
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, result).Inc()
	// Both results' series exist once a kind was corrected: an error
	// rate is then 0, not absent.
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, metrics.ResultError)
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, metrics.ResultSuccess)
	c.statuses.Add(s.key)
	c.mu.Unlock()

	if res.Err != nil {
		c.warn(key.Bundle, "ApplyFailed", "%v", res.Err)
		return res.Err
	}
	if info.finding.Managers[0] == ManagerDeleted {
		c.event(key.Bundle, corev1.EventTypeNormal, "DriftCorrected", "%s re-created after it was deleted", key.Ref)
	} else {
		c.event(key.Bundle, corev1.EventTypeNormal, "DriftCorrected", "%s: %s restored (was changed by %s)",
			key.Ref, strings.Join(info.finding.Fields, ", "), info.finding.ChangedBy())
	}
	// An edit that landed while our apply was in flight was skipped by
	// check; look at the cache once more so that it is not lost.
	if obj, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); ok {
		c.check(d.GVR, obj)
	}
	return nil
}

// deleteFailed deletes an owned Pod that failed, so that it is re-created:
// the deletion event is drift like any other. An event that arrived while
// the deletion was in flight was skipped, so the cache is looked at again.
func (c *Controller) deleteFailed(ctx context.Context, s *bundleState, key fixKey, d apply.Desired) error {
	err := c.applier.Delete(ctx, d.GVR, d.Ref)
	c.mu.Lock()
	delete(s.inFlight, key.Ref)
	c.mu.Unlock()
	if err != nil {
		c.warn(key.Bundle, "ApplyFailed", "%s failed and cannot be deleted for re-creation: %v", key.Ref, err)
		return err
	}
	c.event(key.Bundle, corev1.EventTypeNormal, "PodRecreating", "%s failed; deleted to be re-created", key.Ref)
	if _, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); !ok {
		c.onGone(d.GVR, d.Ref.Namespace, d.Ref.Name)
	}
	return nil
}

// observeApply records an apply's duration.
func (c *Controller) observeApply(r apply.Result) {
	result := metrics.ResultSuccess
	if r.Err != nil {
		result = metrics.ResultError
	}
	c.metrics.ApplyDuration.WithLabelValues(result).Observe(r.Duration.Seconds())
	c.metrics.ApplyDuration.WithLabelValues(metrics.ResultError) // exists from the first apply: a rate of 0, not absent
}

// recordApplyError files a failed apply as a conflict or a failure. The
// caller holds c.mu.
func (c *Controller) recordApplyError(s *bundleState, r apply.Result) {
	ref := r.Desired.Ref
	if apply.IsConflict(r.Err) {
		manager := conflictManager(r.Err.Error())
		s.problems[ref] = problem{state: manifests.StateConflict, manager: manager, message: r.Err.Error()}
		c.metrics.ApplyConflicts.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, manager).Inc()
		return
	}
	s.problems[ref] = problem{state: manifests.StateFailed, message: r.Err.Error()}
}

// conflictManager extracts the first manager named in an apply conflict:
// `Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas`.
func conflictManager(msg string) string {
	const marker = `conflict with "`
	i := strings.Index(msg, marker)
	if i < 0 {
		return "unknown"
	}
	rest := msg[i+len(marker):]
	if j := strings.IndexByte(rest, '"'); j > 0 {
		return rest[:j]
	}
	return "unknown"
}

// newer reports whether resourceVersion a is later than b. Resource
// versions are opaque in the API conventions, but kube-apiserver's are etcd
// revisions, increasing integers; when either does not parse (an
// aggregated API with its own storage), any difference counts as newer.
func newer(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return x > y
}
