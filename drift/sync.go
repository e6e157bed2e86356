package drift

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
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
	}
	waiting := c.waitingFor(key, b)
	c.mu.Lock()
	s.waiting = waiting
	c.mu.Unlock()
	if waiting != "" {
		// Not applied until its dependencies are Ready: a dependency's
		// readiness change syncs it again (queueDependents).
		c.statuses.Add(key)
		return nil
	}
	if b.Spec.Paused {
		// Paused: nothing is applied, corrected or pruned; what was applied
		// stays watched and its drift reported.
		c.statuses.Add(key)
		return nil
	}

	c.watchReads(key, c.effectiveReads(b))
	defer c.endRelease(s) // on every way out; at the latest once recorded
	rendered, err := c.render(ctx, s, b)
	if err != nil {
		c.renderFailed(s, err)
		if b.Spec.Helm != nil {
			c.endRelease(s)
			c.recheckAll(s) // what changed while the release ran is drift from the last render
			c.retryLater(s) // an install or upgrade that failed, or a chart or values not there yet
		}
		return nil // else nothing to retry until an input changes
	}
	act, err := c.applierFor(rendered.Access)
	if err != nil {
		c.renderFailed(s, err)
		return nil
	}
	c.mu.Lock()
	s.spec = rendered.Spec
	s.act = act
	s.refused = ""
	s.retryAfter = 0
	c.mu.Unlock()
	c.churn.Add(int64(rendered.Declared))

	p := newPlan(held)
	changes := act.ApplyAll(ctx, rendered.Take(), s.target(), c.stage(s, act, &rendered.Spec, p))
	p.settle(changes)
	pruneErrs, pending := c.prune(ctx, s, rendered, p)
	c.record(s, rendered, p, changes, pruneErrs)
	if rendered.Released {
		c.event(key, corev1.EventTypeNormal, "Released", "%s", rendered.Note)
	}
	if b.Spec.Helm != nil {
		// Events that arrived while the render ran were not looked at;
		// an edit or a deletion that landed meanwhile is found now.
		c.endRelease(s)
		c.recheckAll(s)
	}
	c.recheck(p.recheck)
	c.publishSync(s)
	if pending > 0 {
		// Retried with the queue's back-off; the inventory keeps them.
		return fmt.Errorf("%d deletions failed and stay pending", pending)
	}
	return nil
}

// render renders the Bundle. A Helm chart's render may install or upgrade
// its release, which writes the objects: while it runs, the Bundle's
// objects are not checked nor corrected, and they stay so until the
// sync has recorded what the release applied (endRelease).
func (c *Controller) render(ctx context.Context, s *bundleState, b *manifests.Bundle) (*manifests.Rendered, error) {
	if b.Spec.Helm == nil {
		return c.pipeline.Render(ctx, b, c.cluster())
	}
	c.mu.Lock()
	s.releasing = true
	c.mu.Unlock()
	rendered, err := c.pipeline.Render(ctx, b, c.cluster())
	if err != nil || !rendered.Released {
		c.endRelease(s)
	}
	return rendered, err
}

// recheckAll looks at every desired object of a Bundle once more: in the
// cache, as an event would; absent, as a deletion.
func (c *Controller) recheckAll(s *bundleState) {
	c.mu.Lock()
	ds := make([]apply.Desired, 0, len(s.desired))
	for _, d := range s.desired {
		ds = append(ds, d)
	}
	c.mu.Unlock()
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

// endRelease lets the Bundle's objects be checked and corrected again.
func (c *Controller) endRelease(s *bundleState) {
	c.mu.Lock()
	s.releasing = false
	c.mu.Unlock()
}

// retryLater syncs a Bundle whose Helm render failed again after a pause
// that doubles with every failure, from helmRetryMin to helmRetryMax: a
// failing upgrade is retried, never in a hot loop (each attempt is a
// release revision). A change of the Bundle syncs it at once.
func (c *Controller) retryLater(s *bundleState) {
	c.mu.Lock()
	s.retryAfter = min(max(2*s.retryAfter, helmRetryMin), helmRetryMax)
	after := s.retryAfter
	c.mu.Unlock()
	c.queue.AddAfter(s.key, after)
}

// The pauses between retries of a failed Helm render.
const (
	helmRetryMin = 10 * time.Second
	helmRetryMax = 5 * time.Minute
)

// stateFor returns the state of a Bundle, made on its first sync, with the
// Bundle's spec and generation recorded.
func (c *Controller) stateFor(key types.NamespacedName, b *manifests.Bundle) (*bundleState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.states[key]
	isNew := s == nil
	if isNew {
		s = newBundleState(key, ownership.NewSet(key, c.opts.ParentNamespace))
		c.states[key] = s
		c.byLabel[ownership.BundleLabelValue(key)] = key
	}
	s.spec, s.generation = b.Spec, b.Generation
	return s, isNew
}

// renderFailed reports a Bundle that could not be rendered at all: what it
// applied stays as it is, watched and corrected from the last render.
func (c *Controller) renderFailed(s *bundleState, err error) {
	var refused *manifests.Refused
	isRefused := errors.As(err, &refused)
	c.mu.Lock()
	s.bundleErrors = []string{err.Error()}
	if isRefused {
		// Nothing of it is applied, and what it applied before is no
		// longer corrected: that would act as an account it may no
		// longer use. Drift is still reported.
		s.refused = refused.Error()
	}
	c.mu.Unlock()
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
	problems map[manifests.ObjectRef]problem
	// mu guards recheck, which concurrent applies append to.
	mu sync.Mutex
	// recheck are objects re-baselined after a restart that lost declared
	// fields while no agent watched: checked once the state is recorded.
	recheck []apply.Desired
	// held are the resource types this sync holds (Controller.hold).
	held map[schema.GroupVersionResource]bool
}

func newPlan(held map[schema.GroupVersionResource]bool) *plan {
	return &plan{desired: map[manifests.ObjectRef]apply.Desired{}, problems: map[manifests.ObjectRef]problem{}, held: held}
}

// settle files the objects that could not be prepared and those refused
// by the ownership rules as problems; refused objects are not desired.
func (p *plan) settle(cs *apply.ChangeSet) {
	for _, inv := range cs.Invalid {
		p.problems[inv.Ref] = problem{state: manifests.StateFailed, message: inv.Error()}
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
		p.problems[r.Desired.Ref] = problem{state: manifests.StateConflict, manager: manager, message: r.Err.Error()}
		delete(p.desired, r.Desired.Ref)
	}
}

// record makes the sync's outcome the Bundle's state: what is desired,
// what was applied (the field sets the server returned), what failed.
func (c *Controller) record(s *bundleState, rendered *manifests.Rendered, p *plan, cs *apply.ChangeSet, pruneErrs []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	c.mu.Lock()
	problems := make(map[manifests.ObjectRef]problem, len(s.problems))
	apiVersions := make(map[manifests.ObjectRef]string, len(s.problems))
	for ref, pr := range s.problems {
		problems[ref] = pr
		apiVersions[ref] = s.desired[ref].APIVersion
	}
	c.mu.Unlock()
	for ref, pr := range problems {
		reason := "ApplyFailed"
		if pr.state == manifests.StateConflict {
			reason = "Conflict"
		}
		c.objectEvent(s.key, apiVersions[ref], ref, corev1.EventTypeWarning, reason, "Apply", "%s: %s", ref, pr.message)
	}
	c.stopUnusedWatches()
	c.watchPods()
	c.metrics.BundleLastSync.WithLabelValues(s.key.Namespace, s.key.Name).SetToCurrentTime()
	c.statuses.Add(s.key)
}
