package drift

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// prune deletes the owned objects that left the Bundle (with
// spec.prune) and strays of its set, and forgets what was applied of them.
// Objects that were declared but never applied nor seen (refused, denied)
// are only forgotten: there is nothing to delete, and the account may not
// be allowed to try.
func (c *Controller) prune(ctx context.Context, s *bundleState, spec *manifests.BundleSpec, p *plan) []error {
	c.mu.Lock()
	var gone, existing []apply.Desired
	for ref, d := range s.desired {
		if _, still := p.desired[ref]; still {
			continue
		}
		gone = append(gone, d)
		if _, cached := c.watches.Get(d.GVR, ref.Namespace, ref.Name); cached || s.applied[ref] != nil {
			existing = append(existing, d)
		}
	}
	c.mu.Unlock()
	var errs []error
	if spec.PruneEnabled() {
		errs = append(errs, c.pruneObjects(ctx, s, withoutKept(existing))...)
		errs = append(errs, c.pruneStrays(ctx, s, p)...)
	}
	c.mu.Lock()
	for _, d := range gone {
		delete(s.applied, d.Ref)
		delete(s.drifted, d.Ref)
	}
	c.mu.Unlock()
	return errs
}

// pruneObjects deletes owned objects; their deletion events are not drift.
func (c *Controller) pruneObjects(ctx context.Context, s *bundleState, ds []apply.Desired) []error {
	refs := make([]manifests.ObjectRef, len(ds))
	for i, d := range ds {
		refs[i] = d.Ref
	}
	var errs []error
	_ = c.claimed(s, refs, func() error {
		c.mu.Lock()
		for _, ref := range refs {
			delete(s.applied, ref)
		}
		c.mu.Unlock()
		c.mu.Lock()
		act := s.actor(c.applier)
		c.mu.Unlock()
		for _, r := range act.Prune(ctx, ds) {
			if r.Err != nil {
				errs = append(errs, r.Err)
				continue
			}
			c.objectEvent(s.key, r.Desired.APIVersion, r.Desired.Ref, corev1.EventTypeNormal, "Pruned", "Prune", "%s deleted: no longer in the bundle", r.Desired.Ref)
		}
		return nil // in errs
	})
	return errs
}

// watchPreviousKinds starts informers for the kinds that the Bundle's
// ApplySet parent lists, so that objects which left the Bundle while the
// agent was not running are seen, and pruned, on its first sync. A missing
// parent is a Bundle never applied; other errors only mean that such
// leftovers are not pruned, which the status does not hide.
func (c *Controller) watchPreviousKinds(ctx context.Context, s *bundleState, held map[schema.GroupVersionResource]bool) {
	parent, err := c.applier.Get(ctx, apply.Desired{Ref: s.set.ParentRef(), GVR: ownership.ParentGVR})
	if err != nil || parent == nil {
		return
	}
	c.mu.Lock()
	s.parentKinds = parent.GetAnnotations()[ownership.ContainsGroupKindsAnnotation]
	s.parentNamespaces = parent.GetAnnotations()[ownership.AdditionalNamespacesAnnotation]
	c.mu.Unlock()
	for _, gk := range ownership.ParseGroupKinds(parent.GetAnnotations()[ownership.ContainsGroupKindsAnnotation]) {
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
}

// pruneStrays deletes cached objects that carry this Bundle's ApplySet ID
// but are not desired — left over from before a restart. Only resource
// types with a running informer are seen; watchPreviousKinds starts those
// that the ApplySet parent lists.
func (c *Controller) pruneStrays(ctx context.Context, s *bundleState, p *plan) []error {
	desiredKeys := map[objKey]bool{}
	for _, d := range p.desired {
		desiredKeys[keyOf(d)] = true
	}
	var errs []error
	c.mu.Lock()
	act := s.actor(c.applier)
	c.mu.Unlock()
	for _, gvr := range c.watches.Running() {
		for _, obj := range c.watches.List(gvr) {
			k := objKey{GVR: gvr, Namespace: obj.Namespace, Name: obj.Name}
			if !s.set.Owns(obj.Labels()) || desiredKeys[k] || obj.Deleting || obj.Annotation(manifests.KeepAnnotation) == "true" {
				continue
			}
			c.mu.Lock()
			kind, known := c.kinds[gvr]
			c.mu.Unlock()
			if _, failed := p.problems[manifests.ObjectRef{Group: gvr.Group, Kind: kind, Namespace: obj.Namespace, Name: obj.Name}]; known && failed {
				continue // declared, but failed this time: not a stray
			}
			ref := manifests.ObjectRef{Group: gvr.Group, Kind: c.applier.KindFor(gvr), Namespace: obj.Namespace, Name: obj.Name}
			if err := act.Delete(ctx, gvr, ref); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// applyParent keeps the ApplySet parent current.
func (c *Controller) applyParent(ctx context.Context, s *bundleState, kinds []schema.GroupKind, namespaces []string) error {
	parent := s.set.Parent(kinds, namespaces)
	d, err := apply.NewDesired(parent, ownership.ParentGVR, "")
	if err != nil {
		return err
	}
	h := d.Hash
	c.mu.Lock()
	same := s.parentHash == h
	c.mu.Unlock()
	if same {
		return nil
	}
	if r := c.applier.Apply(ctx, d, true); r.Err != nil {
		return fmt.Errorf("ApplySet parent: %w", r.Err)
	}
	c.mu.Lock()
	s.parentHash = h
	s.parentKinds = parent.GetAnnotations()[ownership.ContainsGroupKindsAnnotation]
	s.parentNamespaces = parent.GetAnnotations()[ownership.AdditionalNamespacesAnnotation]
	c.mu.Unlock()
	return nil
}

// announceKinds writes the ApplySet parent before a sync applies anything,
// as KEP-3659 asks: listing the kinds and namespaces it had and those the
// sync is about to apply. An agent killed in the middle of the sync then
// finds, on its restart, every kind that may hold objects of the set —
// also those that the Bundle dropped meanwhile, whose objects it prunes.
// Nothing is written when the parent lists them all already.
func (c *Controller) announceKinds(ctx context.Context, s *bundleState, r *manifests.Rendered) error {
	c.mu.Lock()
	kinds, namespaces := s.kindsAndNamespaces()
	kinds = append(kinds, ownership.ParseGroupKinds(s.parentKinds)...)
	namespaces = append(namespaces, strings.Split(s.parentNamespaces, ",")...)
	listed := [2]string{s.parentKinds, s.parentNamespaces}
	c.mu.Unlock()
	for _, o := range r.Objects {
		kinds = append(kinds, o.Object.GroupVersionKind().GroupKind())
		namespaces = append(namespaces, o.Object.GetNamespace())
	}
	namespaces = append(namespaces, r.Spec.DefaultNamespace, r.Spec.TargetNamespace)
	parent := s.set.Parent(kinds, namespaces)
	ann := parent.GetAnnotations()
	if [2]string{ann[ownership.ContainsGroupKindsAnnotation], ann[ownership.AdditionalNamespacesAnnotation]} == listed {
		return nil
	}
	return c.applyParent(ctx, s, kinds, namespaces)
}

// kindsAndNamespaces lists the group-kinds and namespaces of the desired
// objects. The caller holds c.mu.
func (s *bundleState) kindsAndNamespaces() ([]schema.GroupKind, []string) {
	var kinds []schema.GroupKind
	var nss []string
	for ref := range s.desired {
		kinds = append(kinds, ref.GroupKind())
		if ref.Namespace != "" {
			nss = append(nss, ref.Namespace)
		}
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].String() < kinds[j].String() })
	return kinds, nss
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
		for _, d := range s.desired {
			used[d.GVR] = true
		}
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

// withoutKept leaves out the objects that are never deleted
// (manifests.KeepAnnotation): they are only forgotten.
func withoutKept(ds []apply.Desired) []apply.Desired {
	var out []apply.Desired
	for _, d := range ds {
		if !d.Keep {
			out = append(out, d)
		}
	}
	return out
}
