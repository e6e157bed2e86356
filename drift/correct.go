package drift

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/drift/status"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
)

// processFix corrects one drifted object by re-applying it.
func (c *Controller) processFix(ctx context.Context) bool {
	return processNext(ctx, c.fixes, c.countedFix, func(key fixKey, err error) {
		c.logger.Error(err, "Correction failed; retrying", "bundle", key.Bundle, "object", key.Ref.String())
	})
}

// correction is what a correction needs from the state, read under the
// lock in one go.
type correction struct {
	s        *bundleState
	act      *apply.Applier
	info     driftInfo
	desired  apply.Desired
	rendered *manifests.Rendered
	target   apply.Target
	force    bool
	ignore   []string
}

// pending returns the correction to make for key, if the object is still
// drifted, desired, not being written and drift is to be corrected.
func (c *Controller) pending(key fixKey) (correction, bool) {
	s := c.state(key.Bundle)
	if s == nil {
		return correction{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.corrects() || s.ours(key.Ref) {
		return correction{}, false
	}
	info, drifted := s.drifted[key.Ref]
	d, desired := s.desired[key.Ref]
	if !drifted || !desired {
		return correction{}, false
	}
	return correction{s: s, act: s.actor(c.applier), info: info, desired: d, rendered: s.rendered, target: s.target(),
		force: s.spec.Drift.ForceEnabled(), ignore: c.ignoreFor(s, key.Ref)}, true
}

// correct re-applies one drifted object (or, for a failed bare Pod,
// deletes it so that it is re-created), then looks at the cache once more:
// an edit that landed while our write was in flight was skipped by check.
func (c *Controller) correct(ctx context.Context, key fixKey) error {
	w, ok := c.pending(key)
	if !ok {
		return nil
	}
	var res apply.Result
	err := c.claimed(w.s, []manifests.ObjectRef{key.Ref}, func() error {
		d, err := c.desiredObject(w.s.key, w.rendered, w.desired, w.target)
		if err != nil {
			return err
		}
		if w.info.finding.Cause == detect.CausePodFailed {
			res = apply.Result{Desired: d, Action: apply.Deleted, Err: w.act.Delete(ctx, d.GVR, d.Ref)}
			return res.Err
		}
		if len(w.info.finding.Foreign) > 0 && w.force {
			if err := w.act.ReplaceListItems(ctx, d, w.info.finding.Foreign); err != nil {
				return err
			}
		}
		res = w.act.Apply(ctx, c.withoutLostIgnored(d, w.ignore), apply.ApplyOptions{Force: w.force})
		c.observeApply(res)
		c.recordCorrection(w, key, res)
		return res.Err
	})
	switch {
	case errors.Is(err, errBundleChanged):
		c.queue.Add(key.Bundle) // the sync applies what the Bundle says now
		return nil
	case res.Action == apply.Deleted:
		return c.afterFailedPodDeleted(key, w.desired, err)
	case err != nil:
		if res.Err != nil {
			c.objectEvent(key.Bundle, w.desired.APIVersion, key.Ref, corev1.EventTypeWarning, "ApplyFailed", "Correct", "%v", res.Err)
		}
		return err
	}
	if w.info.finding.Cause == detect.CauseDeleted {
		c.objectEvent(key.Bundle, w.desired.APIVersion, key.Ref, corev1.EventTypeNormal, "DriftCorrected", "Correct", "%s re-created after it was deleted", key.Ref)
	} else {
		c.objectEvent(key.Bundle, w.desired.APIVersion, key.Ref, corev1.EventTypeNormal, "DriftCorrected", "Correct", "%s: %s restored (was changed by %s)",
			key.Ref, strings.Join(w.info.finding.Fields, ", "), w.info.finding.ChangedBy())
	}
	c.recheck([]apply.Desired{w.desired})
	return nil
}

// recordCorrection records a correction's outcome in the state and metrics.
func (c *Controller) recordCorrection(w correction, key fixKey, res apply.Result) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
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
		c.metrics.DriftCorrectionSeconds.Observe(time.Since(w.info.seen).Seconds())
	}
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, result).Inc()
	// Both results' series exist once a kind was corrected: an error
	// rate is then 0, not absent.
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, metrics.ResultError)
	c.metrics.DriftCorrections.WithLabelValues(s.key.Namespace, s.key.Name, key.Ref.Group, key.Ref.Kind, metrics.ResultSuccess)
	c.statusSoon(s.key)
}

// afterFailedPodDeleted reports the deletion of a failed bare Pod. Its
// deletion is drift like any other, which re-creates it; a deletion event
// that arrived while the write was claimed was skipped, so the cache is
// looked at again.
func (c *Controller) afterFailedPodDeleted(key fixKey, d apply.Desired, err error) error {
	if err != nil {
		c.objectEvent(key.Bundle, d.APIVersion, key.Ref, corev1.EventTypeWarning, "ApplyFailed", "Recreate", "%s failed and cannot be deleted for re-creation: %v", key.Ref, err)
		return err
	}
	c.objectEvent(key.Bundle, d.APIVersion, key.Ref, corev1.EventTypeNormal, "PodRecreating", "Recreate", "%s failed; deleted to be re-created", key.Ref)
	if _, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); !ok {
		c.onGone(d.GVR, d.Ref.Namespace, d.Ref.Name)
	}
	return nil
}

// errBundleChanged says that the Bundle's inputs changed since the render
// that a correction would read from: its next sync takes over.
var errBundleChanged = errors.New("the bundle changed since its last sync")

// desiredObject reads one desired object again from the last sync's
// render and prepares it exactly as the sync did (the same Prepare), as
// long as the Bundle's inputs are those of that render, and checks that it
// is the same content. The recorded state keeps no request bodies, so
// this is how every correction gets its object, whatever rendered it.
func (c *Controller) desiredObject(key types.NamespacedName, r *manifests.Rendered, d apply.Desired, t apply.Target) (apply.Desired, error) {
	cached := c.cachedBundle(key)
	if r == nil || cached == nil || cached.GetGeneration() != r.Generation {
		return d, fmt.Errorf("bundle %s: %w", key, errBundleChanged)
	}
	obj, err := r.Object(d.Locator)
	if err != nil {
		return d, fmt.Errorf("%s: %w", d.Ref, errBundleChanged)
	}
	prepared, invalid := c.applier.Prepare([]manifests.Object{{Object: obj, Source: d.Source, Locator: d.Locator}}, t)
	if len(invalid) > 0 {
		return d, invalid[0]
	}
	if nd := prepared[0]; nd.Hash == d.Hash && nd.Ref == d.Ref {
		return nd, nil
	}
	return d, fmt.Errorf("%s: %w", d.Ref, errBundleChanged)
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

// recordApplyError files a failed apply as a conflict, naming the
// managers that the API server's conflict causes name, or as a failure.
// The caller holds s.mu.
func (c *Controller) recordApplyError(s *bundleState, r apply.Result) {
	ref := r.Desired.Ref
	if apply.IsConflict(r.Err) {
		managers := apply.ConflictManagers(r.Err)
		s.problems[ref] = status.Problem{State: manifests.StateConflict, Manager: strings.Join(managers, ","), Message: r.Err.Error()}
		for _, m := range managers {
			c.metrics.ApplyConflicts.WithLabelValues(s.key.Namespace, s.key.Name, ref.Group, ref.Kind, s.managerLabel(m)).Inc()
		}
		return
	}
	s.problems[ref] = status.Problem{State: manifests.StateFailed, Message: r.Err.Error()}
}
