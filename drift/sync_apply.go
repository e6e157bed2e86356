package drift

import (
	"context"
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// stage returns the StageFunc of one sync: before a stage's objects are
// applied, their kinds are registered and watched, and the ownership of
// objects the agent has not seen is read in one request per resource
// type and namespace where that is cheaper than one per object.
func (c *Controller) stage(s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, p *plan) apply.StageFunc {
	return func(ctx context.Context, todo []apply.Desired) apply.ObjectFunc {
		gvrs := map[schema.GroupVersionResource]bool{}
		c.mu.Lock()
		for _, d := range todo {
			p.desired[d.Ref] = d
			c.kinds[d.GVR] = d.Ref.Kind
			c.hold(p.held, d.GVR)
			gvrs[d.GVR] = true
		}
		c.mu.Unlock()
		unwatched := map[schema.GroupVersionResource]error{}
		for gvr := range gvrs {
			if err := c.watches.Ensure(ctx, gvr); err != nil {
				unwatched[gvr] = err
			}
		}
		if err := c.announce(ctx, s, todo); err != nil {
			// Applying objects the inventory does not list could leave
			// strays for good.
			return func(_ context.Context, d apply.Desired) apply.Result {
				return apply.Result{Desired: d, Action: apply.Failed, Err: err}
			}
		}
		known := c.listUnseen(ctx, s, act, todo)
		return func(ctx context.Context, d apply.Desired) apply.Result {
			if err := unwatched[d.GVR]; err != nil {
				return apply.Result{Desired: d, Action: apply.Failed, Err: err}
			}
			return c.applyOne(ctx, s, act, spec, d, p, known)
		}
	}
}

// listThreshold is how many unseen objects of one resource type in one
// namespace make a metadata LIST cheaper than a GET each.
const listThreshold = 16

// listed holds what metadata LISTs found for the ownership check: for a
// listed resource type and namespace, an absent name means no object.
type listed struct {
	groups  map[objKey]bool // GVR and namespace only
	objects map[objKey]*metav1.PartialObjectMetadata
}

// lookup returns the listed object, and whether its group was listed.
func (l listed) lookup(d apply.Desired) (*metav1.PartialObjectMetadata, bool) {
	if !l.groups[objKey{GVR: d.GVR, Namespace: d.Ref.Namespace}] {
		return nil, false
	}
	return l.objects[keyOf(d)], true
}

// listUnseen lists, per resource type and namespace with many objects that
// are neither applied by us nor in the cache (a Bundle's first apply), the
// metadata of that namespace's objects without a driftwatch label, once:
// labelled ones are in the cache already, so an object in neither does not
// exist. Errors fall back to a GET per object.
func (c *Controller) listUnseen(ctx context.Context, s *bundleState, act *apply.Applier, todo []apply.Desired) listed {
	l := listed{groups: map[objKey]bool{}, objects: map[objKey]*metav1.PartialObjectMetadata{}}
	counts := map[objKey]int{}
	c.mu.Lock()
	for _, d := range todo {
		if s.applied[d.Ref] != nil {
			continue
		}
		if _, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); !ok {
			counts[objKey{GVR: d.GVR, Namespace: d.Ref.Namespace}]++
		}
	}
	c.mu.Unlock()
	for g, n := range counts {
		if n < listThreshold {
			continue
		}
		objs, err := act.ListMetadata(ctx, g.GVR, g.Namespace, "!"+ownership.BundleLabel)
		if err != nil {
			c.logger.V(2).Info("Metadata list failed; checking objects one by one", "resource", g.GVR, "namespace", g.Namespace, "err", err)
			continue
		}
		l.groups[g] = true
		for name, o := range objs {
			l.objects[objKey{GVR: g.GVR, Namespace: g.Namespace, Name: name}] = o
		}
	}
	return l
}

// applyOne admits and applies one object, or reports it unchanged.
func (c *Controller) applyOne(ctx context.Context, s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, d apply.Desired, p *plan, known listed) apply.Result {
	c.mu.Lock()
	prev := s.applied[d.Ref]
	_, drifted := s.drifted[d.Ref]
	c.mu.Unlock()
	cached, inCache := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
	if prev == nil && inCache {
		prev = c.adoptOwnBaseline(s, d, cached, p)
	}
	if prev != nil && prev.Hash == d.Hash && inCache && (!drifted || spec.Drift.DetectOnly()) {
		// Current, or drifted where only reporting is asked for.
		return apply.Result{Desired: d, Action: apply.Unchanged, Applied: prev}
	}
	if prev == nil {
		if err := c.admit(ctx, s, act, spec, d, cached, known); err != nil {
			var refused *refusal
			if errors.As(err, &refused) {
				return apply.Result{Desired: d, Action: apply.Refused, Err: refused.err}
			}
			return apply.Result{Desired: d, Action: apply.Failed, Err: err}
		}
	}
	var r apply.Result
	_ = c.claimed(s, []manifests.ObjectRef{d.Ref}, func() error {
		c.mu.Lock()
		ignore := s.ignoreFor(d.Ref)
		c.mu.Unlock()
		r = act.Apply(ctx, c.withoutLostIgnored(d, ignore), spec.Drift.ForceEnabled())
		c.observeApply(r)
		return r.Err // in r as well
	})
	return r
}

// adoptOwnBaseline handles a restart: an object that the Bundle's set owns
// and that already holds this content is re-baselined from the cache
// instead of written. Fields lost while no agent watched put it on the
// plan's recheck list.
func (c *Controller) adoptOwnBaseline(s *bundleState, d apply.Desired, cached *watch.Object, p *plan) *apply.Applied {
	if !s.set.Owns(cached.Labels()) || cached.Annotation(apply.HashAnnotation) != d.Hash {
		return nil
	}
	base, lostWhileDown := c.rebaseline(d, cached)
	if base == nil {
		return nil
	}
	c.mu.Lock()
	s.applied[d.Ref] = base
	c.mu.Unlock()
	if lostWhileDown {
		p.mu.Lock()
		p.recheck = append(p.recheck, d)
		p.mu.Unlock()
	}
	return base
}

// refusal is an object the ownership rules do not let the Bundle apply.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }

// admit applies the ownership rules to an object the Bundle has not
// applied: look first in the cache (owned by some Bundle), then in what a
// metadata LIST found, then ask the API server. A refusal is a *refusal;
// other errors are failed reads.
func (c *Controller) admit(ctx context.Context, s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, d apply.Desired, cached *watch.Object, known listed) error {
	var existing metav1.Object
	if cached != nil {
		existing = cached.Meta()
	} else if o, ok := known.lookup(d); ok {
		if o != nil {
			existing = o
		}
	} else {
		live, err := act.Get(ctx, d)
		if err != nil {
			return err
		}
		if live != nil {
			existing = live
		}
	}
	if err := s.set.Admit(existing, spec.Adopt); err != nil {
		return &refusal{err: err}
	}
	return nil
}
