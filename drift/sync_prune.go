package drift

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// The inventory (ownership.Inventory, kept in the Bundle's ApplySet parent
// and in its state) is the one record of what a Bundle owns: it is loaded
// from the parent on the Bundle's first sync in this process, extended with
// a stage's objects before they are applied (announce), and settled after
// the prune. A prune deletes only what it lists — never an object because
// it carries the set's labels, which anyone who may patch it can set — and
// nothing at all while the render has errors. An object whose deletion
// fails stays listed, and is deleted on a retry.

// loadInventory reads the Bundle's ApplySet parent into its state, on its
// first sync in this process, and watches the kinds it lists, so that
// objects that left the Bundle while no agent ran are seen, and pruned.
// A parent that cannot be read fails the sync: a prune without the
// inventory would forget what the Bundle owns.
func (c *Controller) loadInventory(ctx context.Context, s *bundleState, held map[schema.GroupVersionResource]bool) error {
	parent, err := c.applier.Get(ctx, apply.Desired{Ref: s.set.ParentRef(), GVR: ownership.ParentGVR})
	if err != nil {
		return fmt.Errorf("reading the inventory (ApplySet parent): %w", err)
	}
	inv, err := ownership.InventoryOf(parent)
	if err != nil {
		// A parent someone broke: nothing it lists can be trusted, so
		// nothing is pruned until a sync writes it anew.
		c.logger.Error(err, "ApplySet parent unreadable; nothing of it will be pruned", "bundle", s.key)
		inv = ownership.Inventory{}
	}
	kinds := inv.Kinds()
	if parent != nil {
		kinds = append(kinds, ownership.ParseGroupKinds(parent.GetAnnotations()[ownership.ContainsGroupKindsAnnotation])...)
	}
	s.mu.Lock()
	s.inv, s.parentLoaded = inv, parent != nil
	s.mu.Unlock()
	for _, gk := range kinds {
		gvr, err := c.applier.ResourceFor(gk)
		if err != nil {
			c.logger.V(2).Info("Kind of a previous sync is gone", "bundle", s.key, "kind", gk, "err", err)
			continue
		}
		c.mu.Lock()
		c.hold(held, gvr)
		c.mu.Unlock()
		if err := c.watches.Ensure(ctx, gvr); err != nil {
			c.logger.Error(err, "Cannot watch a kind of a previous sync", "bundle", s.key, "resource", gvr)
		}
	}
	return nil
}

// announce lists a stage's objects in the inventory before they are
// applied, as KEP-3659 asks: an agent killed in the middle of the sync then
// finds, on its restart, every object that may belong to the set.
func (c *Controller) announce(ctx context.Context, s *bundleState, stage []apply.Desired) error {
	refs := make([]manifests.ObjectRef, len(stage))
	for i, d := range stage {
		refs[i] = d.Ref
	}
	listed := s.inv.Covers(refs) // the sync's own field
	next := s.inv
	if !listed {
		next = s.inv.With(refs...)
	}
	if listed {
		return nil
	}
	return c.writeInventory(ctx, s, next)
}

// writeInventory writes the Bundle's ApplySet parent with inv, and records
// it in the state once written.
func (c *Controller) writeInventory(ctx context.Context, s *bundleState, inv ownership.Inventory) error {
	parent, err := s.set.ParentOf(inv)
	if err != nil {
		return fmt.Errorf("ApplySet parent: %w", err)
	}
	d, err := apply.NewDesired(parent, ownership.ParentGVR, "")
	if err != nil {
		return fmt.Errorf("ApplySet parent: %w", err)
	}
	if r := c.applier.Apply(ctx, d, apply.ApplyOptions{Force: true}); r.Err != nil {
		return fmt.Errorf("ApplySet parent: %w", r.Err)
	}
	s.mu.Lock()
	s.inv, s.parentLoaded = inv, true
	s.mu.Unlock()
	return nil
}

// errPruneHeld explains why a sync pruned nothing.
var errPruneHeld = errors.New("nothing pruned: the render has errors, and an object missing from a broken render is not an object that left the Bundle")

// prune deletes the objects that the inventory lists and the sync does not
// declare (with spec.prune), and settles the inventory: what is declared,
// and what could not be deleted, which stays listed and is retried. While
// the render has errors nothing is pruned nor dropped from the inventory.
// Objects that were listed but never applied nor seen (refused, denied)
// are only forgotten: there is nothing to delete, and the account may not
// be allowed to try. It returns the errors, and how many deletions failed.
func (c *Controller) prune(ctx context.Context, s *bundleState, rendered *manifests.Rendered, p *plan) ([]error, int) {
	// Everything declared stays listed, applied or not: what was denied
	// and never written is found absent (or unreadable to the account)
	// when it leaves the Bundle, and forgotten then (member), while the
	// parent is not rewritten by every sync that announces it again.
	keep := make([]manifests.ObjectRef, 0, len(p.desired)+len(p.problems))
	for ref := range p.desired {
		keep = append(keep, ref)
	}
	var gone []manifests.ObjectRef
	for _, ref := range s.inv.Objects() {
		if _, declared := p.desired[ref]; declared {
			continue
		}
		if _, failed := p.problems[ref]; failed {
			// Declared, but invalid or refused this time: listed as it was
			// (announced again by every sync; a refused one — another's —
			// is never deleted: it does not carry this set's label).
			keep = append(keep, ref)
			continue
		}
		gone = append(gone, ref)
	}
	held := len(rendered.Errors) > 0
	var errs []error
	var failed []manifests.ObjectRef
	switch {
	case held && len(gone) > 0:
		keep = append(keep, gone...)
		errs = append(errs, errPruneHeld)
	case rendered.Spec.PruneEnabled():
		failed, errs = c.deleteMembers(ctx, s, gone)
		keep = append(keep, failed...)
	}
	s.mu.Lock()
	for _, ref := range gone {
		// No longer declared: not checked nor corrected, pruned or not
		// (an object whose deletion failed stays in the inventory only).
		delete(s.applied, ref)
		delete(s.drifted, ref)
	}
	s.mu.Unlock()
	// keep holds each object once: the inventory is unchanged when it
	// lists them all and nothing else.
	same := s.parentLoaded && len(keep) == s.inv.Len() && s.inv.Covers(keep)
	if !same {
		if err := c.writeInventory(ctx, s, ownership.NewInventory(keep...)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs, len(failed)
}

// deleteMembers deletes the Bundle's objects refs as the Bundle's account,
// each only if it exists and still carries the Bundle's ApplySet label,
// and is not kept (manifests.KeepAnnotation); their deletion events are
// not drift. It returns the objects that could not be deleted.
func (c *Controller) deleteMembers(ctx context.Context, s *bundleState, refs []manifests.ObjectRef) ([]manifests.ObjectRef, []error) {
	act := s.actor(c.applier) // the sync's own field
	var todo []apply.Desired
	var failed []manifests.ObjectRef
	var errs []error
	for _, ref := range refs {
		d, ok, err := c.member(ctx, s, act, ref)
		switch {
		case err != nil:
			failed, errs = append(failed, ref), append(errs, err)
		case ok:
			todo = append(todo, d)
		}
	}
	_ = c.claimed(s, refsOf(todo), func() error {
		for _, r := range act.Prune(ctx, todo) {
			if r.Err != nil {
				failed, errs = append(failed, r.Desired.Ref), append(errs, r.Err)
				continue
			}
			c.objectEvent(s.key, r.Desired.APIVersion, r.Desired.Ref, corev1.EventTypeNormal, "Pruned", "Prune", "%s deleted: no longer in the bundle", r.Desired.Ref)
		}
		return nil // in errs
	})
	return failed, errs
}

// member says whether the listed object ref is there to delete: in the
// cache, else (a kind no informer watches, a Bundle deleted while no agent
// held its state) read with act.
func (c *Controller) member(ctx context.Context, s *bundleState, act *apply.Applier, ref manifests.ObjectRef) (apply.Desired, bool, error) {
	s.mu.Lock()
	d, known := s.desired[ref]
	applied := s.applied[ref] != nil
	s.mu.Unlock()
	if !known {
		gvr, err := c.applier.ResourceFor(ref.GroupKind())
		if err != nil {
			return d, false, nil // the kind is gone, and its objects with it
		}
		d = apply.Desired{Ref: ref, GVR: gvr}
	}
	if d.Keep {
		return d, false, nil
	}
	var labels, annotations map[string]string
	if obj, cached := c.watches.Get(d.GVR, ref.Namespace, ref.Name); cached {
		labels, annotations = obj.Labels(), map[string]string{manifests.KeepAnnotation: obj.Annotation(manifests.KeepAnnotation)}
	} else if !applied || !c.watching(d.GVR) {
		m, err := act.GetMetadata(ctx, d.GVR, ref)
		if apierrors.IsForbidden(err) {
			return d, false, nil // what the account may not read it did not write
		}
		if err != nil {
			return d, false, err
		}
		if m == nil {
			return d, false, nil // not there: nothing to delete
		}
		labels, annotations = m.Labels, m.Annotations
	}
	if labels != nil && (!s.set.Owns(labels) || annotations[manifests.KeepAnnotation] == "true") {
		return d, false, nil // another set's now, or kept: forgotten, not deleted
	}
	if labels == nil && !applied {
		return d, false, nil
	}
	return d, true, nil
}

// watching reports whether an informer runs for gvr.
func (c *Controller) watching(gvr schema.GroupVersionResource) bool {
	return slices.Contains(c.watches.Running(), gvr)
}

func refsOf(ds []apply.Desired) []manifests.ObjectRef {
	out := make([]manifests.ObjectRef, len(ds))
	for i, d := range ds {
		out[i] = d.Ref
	}
	return out
}

// stopUnusedWatches stops informers whose resource type no Bundle uses
// and no sync in progress holds. It holds c.mu throughout, so that a sync
// either holds a type before the check or starts its informer anew after.
func (c *Controller) stopUnusedWatches() {
	c.mu.Lock()
	defer c.mu.Unlock()
	used := map[schema.GroupVersionResource]bool{}
	for gvr := range c.holding {
		used[gvr] = true
	}
	for _, s := range c.states {
		s.mu.Lock()
		for _, d := range s.desired {
			used[d.GVR] = true
		}
		s.mu.Unlock()
	}
	for _, gvr := range c.watches.Running() {
		if !used[gvr] {
			c.watches.Stop(gvr)
		}
	}
}

// hold marks gvr as watched by the sync whose held set this is, once per
// sync. The caller holds c.mu.
func (c *Controller) hold(held map[schema.GroupVersionResource]bool, gvr schema.GroupVersionResource) {
	if !held[gvr] {
		held[gvr] = true
		c.holding[gvr]++
	}
}

// release ends a sync's holds.
func (c *Controller) release(held map[schema.GroupVersionResource]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for gvr := range held {
		if c.holding[gvr]--; c.holding[gvr] <= 0 {
			delete(c.holding, gvr)
		}
	}
}
