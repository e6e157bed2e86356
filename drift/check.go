package drift

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/guard"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// lookup finds the Bundle state and reference of a cached object: through
// its Bundle label, or for a deleted object (labels nil) in every Bundle.
// Only objects that a Bundle declares or applied are found. It takes c.mu,
// and each state's lock in turn (lock order: Controller.mu, then
// bundleState.mu).
func (c *Controller) lookup(gvr schema.GroupVersionResource, namespace, name string, labels map[string]string) (*bundleState, manifests.ObjectRef, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kind, ok := c.kinds[gvr]
	if !ok {
		return nil, manifests.ObjectRef{}, false
	}
	ref := manifests.ObjectRef{Group: gvr.Group, Kind: kind, Namespace: namespace, Name: name}
	if labels != nil {
		if key, ok := c.byLabel[labels[ownership.BundleLabel]]; ok {
			if s, ok := c.states[key]; ok {
				return s, ref, s.hasLocked(ref)
			}
		}
		return nil, ref, false
	}
	for _, s := range c.states {
		if s.hasLocked(ref) {
			return s, ref, true
		}
	}
	return nil, ref, false
}

// check compares a cached object with what we applied. It makes no API
// call: the verdict comes from managedFields alone.
func (c *Controller) check(gvr schema.GroupVersionResource, obj *watch.Object) {
	now := time.Now()
	s, ref, ok := c.lookup(gvr, obj.Namespace, obj.Name, obj.Labels())
	if !ok || obj.Deleting {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ours(ref) {
		return
	}
	applied := s.applied[ref]
	if applied == nil {
		return
	}
	if !detect.Newer(obj.ResourceVersion, applied.ResourceVersion) {
		// Our own write, or an event from before it, still in the queue:
		// what it shows was overwritten by our apply.
		return
	}
	fields, err := applied.FieldSet()
	if err != nil {
		c.logger.Error(err, "Cannot read the recorded fields", "object", ref.String())
		return
	}
	f, err := detect.Detect(fields, obj.ManagedFields(), c.applier.FieldManager(), c.ignoreFor(s, ref))
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
			c.statusSoon(s.key)
		}
		return
	}
	c.driftFound(s, ref, f, now, obj.Annotation(guard.OverrideAnnotation))
}

// onGone handles an owned object that was deleted.
func (c *Controller) onGone(gvr schema.GroupVersionResource, namespace, name string) {
	now := time.Now()
	s, ref, ok := c.lookup(gvr, namespace, name, nil)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ours(ref) || s.applied[ref] == nil {
		return // releasing: Helm deletes what left the chart (recheckAll looks again)
	}
	c.driftFound(s, ref, detect.Deleted(), now, "")
}

// driftFound records a drift, reports it and schedules the correction —
// unless the object carries guard.OverrideAnnotation (override says why):
// a break-glass change, recorded and left in place. The caller holds s.mu.
func (c *Controller) driftFound(s *bundleState, ref manifests.ObjectRef, f detect.Finding, now time.Time, override string) {
	prev, seenBefore := s.drifted[ref]
	s.drifted[ref] = driftInfo{finding: f, seen: now}
	s.lastDrift = now
	if !seenBefore || !prev.finding.Same(f) {
		for _, m := range f.Culprits() {
			c.metrics.DriftDetected.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, s.managerLabel(m)).Inc()
		}
		apiVersion := s.desired[ref].APIVersion
		if f.Cause == detect.CauseDeleted {
			c.objectEvent(s.key, apiVersion, ref, corev1.EventTypeWarning, "DriftDetected", "Detect", "%s was deleted", ref)
		} else {
			c.objectEvent(s.key, apiVersion, ref, corev1.EventTypeWarning, "DriftDetected", "Detect", "%s: %s changed by %s",
				ref, strings.Join(f.Fields, ", "), f.ChangedBy())
		}
	}
	c.statusSoon(s.key)
	if override != "" {
		if !seenBefore || !prev.finding.Same(f) {
			for _, m := range f.Culprits() {
				c.metrics.DriftOverrides.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, s.managerLabel(m)).Inc()
			}
			c.objectEvent(s.key, s.desired[ref].APIVersion, ref, corev1.EventTypeWarning, "DriftOverridden", "Override",
				"%s: %s changed by %s and left in place: %s=%q; remove the annotation to have it corrected", ref, strings.Join(f.Fields, ", "), f.ChangedBy(), guard.OverrideAnnotation, override)
		}
		return
	}
	if !s.corrects() {
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
// s.mu.
func (c *Controller) recordFight(s *bundleState, ref manifests.ObjectRef, f detect.Finding, now time.Time) time.Duration {
	var wait time.Duration
	for _, m := range f.Managers { // culprits that are not managers cannot fight
		for _, field := range f.Fields {
			k := fightKey{Ref: ref, Field: field, Manager: m}
			ft := s.fights[k]
			if ft == nil {
				if !s.roomForFight(now, c.opts.FightWindow) {
					continue // a flood of new managers: not counted, still corrected
				}
				ft = &fight{}
				s.fights[k] = ft
			}
			if now.Before(ft.Until) {
				ft.Last = now
				c.statuses.AddAfter(s.key, ft.Pause) // Stalled ends when this take is a back-off old
				if d := ft.Until.Sub(now); d > wait {
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
			if ft.Pause == 0 {
				ft.Pause = c.opts.FightBackoff
				c.metrics.FieldFights.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, s.managerLabel(m)).Inc()
				c.objectEvent(s.key, s.desired[ref].APIVersion, ref, corev1.EventTypeWarning, "FightDetected", "BackOff",
					"%s: %s is taken again and again by %s; backing off. To let %s own it, add to spec.drift.ignore: %s",
					ref, field, m, m, detect.IgnoreSuggestion(ref, field))
			} else {
				ft.Pause = min(2*ft.Pause, c.opts.FightMaxBackoff)
			}
			ft.Until, ft.Last = now.Add(ft.Pause), now
			c.statuses.AddAfter(s.key, ft.Pause)
			if ft.Pause > wait {
				wait = ft.Pause
			}
		}
	}
	return wait
}
