package drift

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/status"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// syncBundle brings the target cluster in line with one Bundle:
// render → own and apply → prune → record → publish.
func (c *Controller) syncBundle(ctx context.Context, key types.NamespacedName) error {
	u, b, err := c.bundleFromCache(key)
	if err != nil {
		return err
	}
	if u == nil {
		c.forget(key) // deleted, and the finalizer already ran (or was never there)
		return nil
	}
	if u.GetDeletionTimestamp() != nil {
		return c.finalize(ctx, key, u, b)
	}
	if err := c.ensureFinalizer(ctx, u); err != nil {
		return err
	}
	s, isNew := c.stateFor(key, b)
	// The informers this sync starts are held until it has recorded what
	// it declared: another Bundle's sync that ends meanwhile must not stop
	// them as unused.
	held := map[schema.GroupVersionResource]bool{}
	defer c.release(held)
	if isNew {
		if err := c.loadInventory(ctx, s, held); err != nil {
			c.forgetState(key) // the next try reads the parent again
			return err
		}
		c.unguardLeftover(ctx, s)
	}
	if c.holdBack(s, b) {
		return nil
	}
	c.watchReads(key, c.effectiveReads(b))
	if b.Spec.Helm != nil {
		return c.syncRelease(ctx, s, b, held)
	}
	rendered, err := c.pipeline.Render(ctx, b, c.cluster())
	if err != nil {
		c.renderFailed(s, err)
		return nil // nothing to retry until an input changes
	}
	return c.applyRendered(ctx, s, rendered, held)
}

// holdBack reports whether the Bundle is not to be applied now: it waits
// for its dependencies to be Ready (a dependency's readiness change syncs
// it again, queueDependents), or it is paused (nothing is applied,
// corrected or pruned; what was applied stays watched and its drift
// reported). Its status says so either way.
func (c *Controller) holdBack(s *bundleState, b *manifests.Bundle) bool {
	waiting := c.waitingFor(s.key, b)
	s.mu.Lock()
	s.waiting = waiting
	s.mu.Unlock()
	if waiting == "" && !b.Spec.Paused {
		return false
	}
	c.statuses.Add(s.key)
	return true
}

// syncRelease syncs a Helm Bundle. Its render may install or upgrade the
// release, which writes the objects: from the render until the sync has
// recorded what the release applied, the Bundle's objects are neither
// checked nor corrected (bundleState.releasing), and every one of them is
// looked at once more after (recheckAll): what changed meanwhile is drift
// from the last render. A render that fails — an install or upgrade that
// failed, a chart or values not there yet — is tried again with the
// back-off of helmRetry, never in a hot loop (each attempt is a release
// revision); a change of the Bundle syncs it at once.
func (c *Controller) syncRelease(ctx context.Context, s *bundleState, b *manifests.Bundle, held map[schema.GroupVersionResource]bool) error {
	c.setReleasing(s, true)
	defer func() {
		c.setReleasing(s, false)
		c.recheckAll(s)
	}()
	rendered, err := c.pipeline.Render(ctx, b, c.cluster())
	if err != nil {
		c.renderFailed(s, err)
		c.queue.AddAfter(s.key, c.helmRetry.When(s.key))
		return nil
	}
	c.helmRetry.Forget(s.key)
	if !rendered.Released {
		c.setReleasing(s, false) // nothing was written
	}
	return c.applyRendered(ctx, s, rendered, held)
}

// applyRendered applies what a render declared, as the account it was
// admitted to act as, prunes what left it and records the outcome.
func (c *Controller) applyRendered(ctx context.Context, s *bundleState, rendered *manifests.Rendered, held map[schema.GroupVersionResource]bool) error {
	act, err := c.applierFor(rendered.Access)
	if err != nil {
		c.renderFailed(s, err)
		return nil
	}
	s.mu.Lock()
	s.spec = rendered.Spec
	s.act, s.access = act, rendered.Access
	s.refused = ""
	s.mu.Unlock()
	c.churn.Add(int64(rendered.Declared))

	p := newPlan(held)
	p.guarded = rendered.Spec.Drift.Guarded()
	changes := c.applyStages(ctx, s, act, rendered, p)
	p.settle(changes)
	pruneErrs, pending := c.prune(ctx, s, rendered, p)
	c.record(s, rendered, p, changes, pruneErrs)
	c.guardBundle(ctx, s, p)
	if rendered.Released {
		c.event(s.key, corev1.EventTypeNormal, "Released", "%s", rendered.Note)
	}
	c.recheck(p.recheck)
	c.publishSync(s)
	if pending > 0 {
		// Retried with the queue's back-off; the inventory keeps them.
		return fmt.Errorf("%d deletions failed and stay pending", pending)
	}
	return nil
}

// recheckAll looks at every desired object of a Bundle once more: in the
// cache, as an event would; absent, as a deletion.
func (c *Controller) recheckAll(s *bundleState) {
	ds := make([]apply.Desired, 0, len(s.desired))
	for _, d := range s.desired { // the sync's own field
		ds = append(ds, d)
	}
	for _, d := range ds {
		obj, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
		switch {
		case !ok:
			c.onGone(d.GVR, d.Ref.Namespace, d.Ref.Name)
		case d.GVR == watch.PodsGVR && obj.Pod != nil && obj.Pod.Phase == corev1.PodFailed:
			c.podFailed(d.GVR, obj) // a bare Pod that failed while Helm worked
		default:
			c.check(d.GVR, obj)
		}
	}
}

// effectiveReads are the objects the Bundle's render reads on this
// cluster (a customization may add valuesFrom or change the namespace).
func (c *Controller) effectiveReads(b *manifests.Bundle) []manifests.Reference {
	spec, err := manifests.Effective(b.Spec, c.cluster())
	if err != nil {
		spec = b.Spec // the render reports the error; watch what the Bundle names
	}
	return spec.Reads()
}

// setReleasing marks the Bundle's objects as being written by a Helm
// operation, or lets them be checked and corrected again.
func (c *Controller) setReleasing(s *bundleState, on bool) {
	s.mu.Lock()
	s.releasing = on
	s.mu.Unlock()
}

// The back-off between retries of a failed Helm render (helmRetry).
const (
	helmRetryMin = 10 * time.Second
	helmRetryMax = 5 * time.Minute
)

// stateFor returns the state of a Bundle, made on its first sync, with the
// Bundle's spec and generation recorded.
func (c *Controller) stateFor(key types.NamespacedName, b *manifests.Bundle) (*bundleState, bool) {
	c.mu.Lock()
	s := c.states[key]
	isNew := s == nil
	if isNew {
		s = newBundleState(key, ownership.NewSet(key, c.opts.ParentNamespace))
		c.states[key] = s
		c.byLabel[ownership.BundleLabelValue(key)] = key
	}
	c.mu.Unlock()
	s.mu.Lock()
	s.spec, s.generation = b.Spec, b.Generation
	s.mu.Unlock()
	return s, isNew
}

// renderFailed reports a Bundle that could not be rendered at all: what it
// applied stays as it is, watched and corrected from the last render.
func (c *Controller) renderFailed(s *bundleState, err error) {
	var refused *manifests.Refused
	isRefused := errors.As(err, &refused)
	s.mu.Lock()
	s.bundleErrors = []string{err.Error()}
	if isRefused {
		// Nothing of it is applied, and what it applied before is no
		// longer corrected: that would act as an account it may no
		// longer use. Drift is still reported.
		s.refused = refused.Error()
	}
	s.mu.Unlock()
	if isRefused {
		c.warn(s.key, "Refused", "%v", err)
	} else {
		c.warn(s.key, "RenderFailed", "%v", err)
	}
	c.statuses.Add(s.key)
}

// plan collects one sync's desired objects and the objects it refused.
type plan struct {
	desired  map[manifests.ObjectRef]apply.Desired
	problems map[manifests.ObjectRef]status.Problem
	// recheck are objects re-baselined after a restart that lost declared
	// fields while no agent watched: checked once the state is recorded.
	recheck []apply.Desired
	// held are the resource types this sync holds (Controller.hold).
	held map[schema.GroupVersionResource]bool
	// replicas are the replica counts that scalable objects declare, for
	// the guard of a Bundle in Prevent or Warn mode (guarded;
	// ownedReplicas).
	guarded  bool
	replicas map[manifests.ObjectRef]int64
}

func newPlan(held map[schema.GroupVersionResource]bool) *plan {
	return &plan{desired: map[manifests.ObjectRef]apply.Desired{}, problems: map[manifests.ObjectRef]status.Problem{}, held: held,
		replicas: map[manifests.ObjectRef]int64{}}
}

// settle files the objects that could not be prepared and those refused
// by the ownership rules as problems; refused objects are not desired.
func (p *plan) settle(cs *apply.ChangeSet) {
	for _, inv := range cs.Invalid {
		p.problems[inv.Ref] = status.Problem{State: manifests.StateFailed, Message: inv.Error()}
	}
	for _, r := range cs.Entries {
		if r.Action != apply.Refused {
			continue
		}
		manager := ""
		var other *ownership.ErrOwnedByOther
		if errors.As(r.Err, &other) {
			manager = other.Owner
		}
		p.problems[r.Desired.Ref] = status.Problem{State: manifests.StateConflict, Manager: manager, Message: r.Err.Error()}
		delete(p.desired, r.Desired.Ref)
	}
}

// record makes the sync's outcome the Bundle's state: what is desired,
// what was applied (the field sets the server returned), what failed.
func (c *Controller) record(s *bundleState, rendered *manifests.Rendered, p *plan, cs *apply.ChangeSet, pruneErrs []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The state keeps no request bodies: a correction reads its one
	// object from the render (desiredObject).
	for ref, d := range p.desired {
		d.JSON = nil
		p.desired[ref] = d
	}
	s.desired, s.problems, s.rendered = p.desired, p.problems, rendered
	s.declared, s.renderFailures = rendered.Declared, len(rendered.Errors)
	for ref := range s.drifted {
		if _, ok := p.desired[ref]; !ok {
			delete(s.drifted, ref)
		}
	}
	wrote := false
	for _, r := range cs.Entries {
		switch {
		case r.Action == apply.Refused:
		case r.Err != nil:
			c.recordApplyError(s, r)
		case r.Applied != nil:
			s.applied[r.Desired.Ref] = r.Applied
			if r.Action != apply.Unchanged {
				// Written: whatever had drifted holds our values again. An
				// unchanged object keeps its drift (Detect mode).
				delete(s.drifted, r.Desired.Ref)
				wrote = true
			}
		}
	}
	var errs []string
	for _, group := range [][]error{rendered.Errors, cs.Errors, pruneErrs} {
		for _, e := range group {
			errs = append(errs, e.Error())
		}
	}
	s.bundleErrors = errs
	if wrote {
		s.lastApplied = time.Now()
	}
}

// recheck looks once more at objects whose drift may predate the sync.
func (c *Controller) recheck(ds []apply.Desired) {
	for _, d := range ds {
		if obj, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); ok {
			c.check(d.GVR, obj)
		}
	}
}

// publishSync reports the sync's problems as events, retires unused
// informers and queues the status.
func (c *Controller) publishSync(s *bundleState) {
	s.mu.Lock()
	problems := make(map[manifests.ObjectRef]status.Problem, len(s.problems))
	apiVersions := make(map[manifests.ObjectRef]string, len(s.problems))
	for ref, pr := range s.problems {
		problems[ref] = pr
		apiVersions[ref] = s.desired[ref].APIVersion
	}
	s.mu.Unlock()
	for ref, pr := range problems {
		reason := "ApplyFailed"
		if pr.State == manifests.StateConflict {
			reason = "Conflict"
		}
		c.objectEvent(s.key, apiVersions[ref], ref, corev1.EventTypeWarning, reason, "Apply", "%s: %s", ref, pr.Message)
	}
	c.stopUnusedWatches()
	c.watchPods()
	c.metrics.BundleLastSync.WithLabelValues(s.key.Namespace, s.key.Name).SetToCurrentTime()
	c.statuses.Add(s.key)
}
