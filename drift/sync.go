package drift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// syncBundle brings the target cluster in line with one Bundle.
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

	c.mu.Lock()
	s := c.states[key]
	isNew := s == nil
	if isNew {
		s = newBundleState(key, c.setFor(key))
		c.states[key] = s
		c.byLabel[ownership.BundleLabelValue(key)] = key
	}
	s.spec, s.generation = b.Spec, b.Generation
	c.mu.Unlock()
	// The informers this sync starts are held until it has recorded what
	// it declared: another Bundle's sync that ends meanwhile must not stop
	// them as unused.
	held := map[schema.GroupVersionResource]bool{}
	defer c.release(held)
	if isNew {
		c.watchPreviousKinds(ctx, s, held)
	}
	if b.Spec.Paused {
		// Paused: nothing is applied, corrected or pruned; what was applied
		// stays watched and its drift reported.
		c.statuses.Add(key)
		return nil
	}

	objs, decodeErrs := manifests.Decode(b.Spec.Resources)
	bundleErrs := make([]string, 0, len(decodeErrs))
	for _, e := range decodeErrs {
		bundleErrs = append(bundleErrs, e.Error())
	}

	// Stage 1: Namespaces and CRDs, so that stage 2 can resolve and land.
	var first, rest []manifests.Object
	for _, o := range objs {
		gk := o.Object.GroupVersionKind().GroupKind()
		if gk == (schema.GroupKind{Kind: "Namespace"}) || gk == (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			first = append(first, o)
		} else {
			rest = append(rest, o)
		}
	}
	declared := len(objs) + len(decodeErrs)
	c.churn.Add(int64(declared))
	objs = nil // first and rest hold the objects; applyStage drops each once it is converted
	plan := &plan{desired: map[manifests.ObjectRef]apply.Desired{}, problems: map[manifests.ObjectRef]problem{}, seen: map[manifests.ObjectRef]string{}, held: held}
	results := c.applyStage(ctx, s, b, first, plan)
	var crds []string
	for _, r := range results {
		if r.Err == nil && r.Desired.Ref.Kind == "CustomResourceDefinition" && r.Action != apply.Unchanged {
			crds = append(crds, r.Desired.Ref.Name)
		}
	}
	if len(crds) > 0 {
		if err := c.applier.WaitEstablished(ctx, crds, time.Minute); err != nil {
			bundleErrs = append(bundleErrs, err.Error())
		}
		c.applier.ResetMapping()
	}
	results = append(results, c.applyStage(ctx, s, b, rest, plan)...)

	// Prune what left the Bundle, then record the new desired set.
	var pruneErrs []error
	c.mu.Lock()
	var prune []apply.Desired
	for ref, d := range s.desired {
		if _, still := plan.desired[ref]; !still {
			prune = append(prune, d)
		}
	}
	c.mu.Unlock()
	if b.Spec.PruneEnabled() {
		pruneErrs = append(pruneErrs, c.pruneObjects(ctx, s, prune)...)
	}
	pruneErrs = append(pruneErrs, c.pruneStrays(ctx, s, plan)...)

	c.mu.Lock()
	for _, d := range prune {
		delete(s.applied, d.Ref)
		delete(s.drifted, d.Ref)
	}
	// The state keeps no request bodies: a correction renders its one
	// object again from the cached Bundle (render).
	for ref, d := range plan.desired {
		d.JSON = nil
		plan.desired[ref] = d
	}
	s.desired = plan.desired
	s.declared = declared
	s.decodeFailures = len(decodeErrs)
	s.problems = plan.problems
	for ref := range s.drifted {
		if _, ok := plan.desired[ref]; !ok {
			delete(s.drifted, ref)
		}
	}
	wrote := false
	for _, r := range results {
		switch {
		case r.Err != nil:
			c.recordApplyError(s, r)
		case r.Applied != nil:
			s.applied[r.Desired.Ref] = r.Applied
			if r.Action != apply.Unchanged {
				// Written: whatever had drifted holds our values again. An
				// unchanged object keeps its drift (Detect mode, paused).
				delete(s.drifted, r.Desired.Ref)
				wrote = true
			}
		}
	}
	for _, e := range pruneErrs {
		bundleErrs = append(bundleErrs, e.Error())
	}
	s.bundleErrors = bundleErrs
	if wrote {
		s.lastApplied = time.Now()
	}
	kinds, namespaces := s.kindsAndNamespaces()
	c.mu.Unlock()
	for _, d := range plan.recheck {
		if obj, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name); ok {
			c.check(d.GVR, obj)
		}
	}

	if err := c.applyParent(ctx, s, kinds, namespaces); err != nil {
		c.mu.Lock()
		s.bundleErrors = append(s.bundleErrors, err.Error())
		c.mu.Unlock()
	}
	for _, r := range results {
		if r.Err != nil {
			c.warn(key, "ApplyFailed", "%v", r.Err)
		}
	}
	for ref, p := range plan.problems {
		reason := "ApplyFailed"
		if p.state == manifests.StateConflict {
			reason = "Conflict"
		}
		c.warn(key, reason, "%s: %s", ref, p.message)
	}
	c.stopUnusedWatches()
	c.watchPods()
	c.metrics.BundleLastSync.WithLabelValues(key.Namespace, key.Name).SetToCurrentTime()
	c.statuses.Add(key)
	c.updateWatchedGauge()
	return nil
}

// plan collects one sync's desired objects and the objects it refused.
type plan struct {
	mu       sync.Mutex
	desired  map[manifests.ObjectRef]apply.Desired
	problems map[manifests.ObjectRef]problem
	seen     map[manifests.ObjectRef]string // ref → source, to catch duplicates
	// recheck are objects re-baselined after a restart that lost declared
	// fields while no agent watched: checked once the state is recorded.
	recheck []apply.Desired
	// held are the resource types this sync holds (Controller.hold).
	held map[schema.GroupVersionResource]bool
}

// applyStage resolves, admits and applies one stage's objects with
// bounded concurrency, skipping those whose applied state is current.
func (c *Controller) applyStage(ctx context.Context, s *bundleState, b *manifests.Bundle, objs []manifests.Object, p *plan) []apply.Result {
	var todo []apply.Desired
	for i, o := range objs {
		// The decoded object is this sync's own: no copy. It is dropped
		// once converted, so a large Bundle's maps do not all live at once.
		obj := o.Object
		objs[i].Object = nil
		ref := manifests.RefOf(obj)
		gvr, err := c.applier.Resolve(obj, b.Spec.DefaultNamespace, b.Spec.TargetNamespace)
		ref.Namespace = obj.GetNamespace()
		if err != nil {
			p.problems[ref] = problem{state: manifests.StateFailed, message: fmt.Sprintf("%s: %v", o.Source, err)}
			continue
		}
		if prev, dup := p.seen[ref]; dup {
			p.problems[ref] = problem{state: manifests.StateFailed,
				message: fmt.Sprintf("%s: declared twice (also in %s); the first one is applied", o.Source, prev)}
			continue
		}
		p.seen[ref] = o.Source
		s.set.Stamp(obj)
		d, err := apply.NewDesired(obj, gvr, o.Source)
		if err != nil {
			p.problems[ref] = problem{state: manifests.StateFailed, message: fmt.Sprintf("%s: %v", o.Source, err)}
			continue
		}
		d.Locator = o.Locator
		p.desired[ref] = d
		c.mu.Lock()
		c.kinds[d.GVR] = d.Ref.Kind
		c.hold(p.held, gvr)
		c.mu.Unlock()
		if err := c.watches.Ensure(ctx, gvr); err != nil {
			p.problems[ref] = problem{state: manifests.StateFailed, message: err.Error()}
			continue
		}
		todo = append(todo, d)
	}

	known := c.listUnseen(ctx, s, todo)
	results := make([]apply.Result, len(todo))
	force := b.Spec.Drift.ForceEnabled()
	var wg sync.WaitGroup
	for i, d := range todo {
		wg.Add(1)
		c.applySlots <- struct{}{}
		go func() {
			defer func() { <-c.applySlots; wg.Done() }()
			results[i] = c.applyOne(ctx, s, b, d, force, p, known)
		}()
	}
	wg.Wait()
	return results
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
func (c *Controller) listUnseen(ctx context.Context, s *bundleState, todo []apply.Desired) listed {
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
		objs, err := c.applier.ListMetadata(ctx, g.GVR, g.Namespace, "!"+ownership.BundleLabel)
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
func (c *Controller) applyOne(ctx context.Context, s *bundleState, b *manifests.Bundle, d apply.Desired, force bool, p *plan, known listed) apply.Result {
	c.mu.Lock()
	prev := s.applied[d.Ref]
	_, drifted := s.drifted[d.Ref]
	c.mu.Unlock()
	cached, inCache := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)

	if prev == nil && inCache && s.set.Owns(cached.Labels()) && cached.Annotation(apply.HashAnnotation) == d.Hash {
		// A restart: the object already holds this content; re-baseline
		// from the cache instead of writing.
		if base, lostWhileDown := c.rebaseline(d, cached); base != nil {
			prev = base
			c.mu.Lock()
			s.applied[d.Ref] = prev
			c.mu.Unlock()
			if lostWhileDown {
				p.mu.Lock()
				p.recheck = append(p.recheck, d)
				p.mu.Unlock()
			}
		}
	}
	if prev != nil && prev.Hash == d.Hash && inCache && (!drifted || s.spec.Paused || s.spec.Drift.DetectOnly()) {
		// Current, or drifted where only reporting is asked for.
		return apply.Result{Desired: d, Action: apply.Unchanged, Applied: prev}
	}

	// Ownership: objects we applied are ours; for others, look first in
	// the cache (owned by some Bundle), then ask the API server.
	if prev == nil {
		var existing metav1.Object
		if inCache {
			existing = cached.Meta()
		} else if o, ok := known.lookup(d); ok {
			if o != nil {
				existing = o
			}
		} else {
			live, err := c.applier.Get(ctx, d)
			if err != nil {
				return apply.Result{Desired: d, Action: apply.Failed, Err: err}
			}
			if live != nil {
				existing = live
			}
		}
		if err := s.set.Admit(existing, b.Spec.Adopt); err != nil {
			p.mu.Lock()
			st := manifests.StateConflict
			var other *ownership.ErrOwnedByOther
			manager := ""
			if errors.As(err, &other) {
				manager = other.Owner
			}
			p.problems[d.Ref] = problem{state: st, manager: manager, message: err.Error()}
			delete(p.desired, d.Ref)
			p.mu.Unlock()
			return apply.Result{Desired: d, Action: apply.Refused}
		}
	}
	c.mu.Lock()
	s.inFlight[d.Ref] = true
	ignore := s.ignoreFor(d.Ref)
	c.mu.Unlock()
	r := c.applier.Apply(ctx, c.withoutLostIgnored(d, ignore), force)
	c.observeApply(r)
	c.mu.Lock()
	delete(s.inFlight, d.Ref)
	c.mu.Unlock()
	return r
}

// pruneObjects deletes owned objects that left the Bundle.
func (c *Controller) pruneObjects(ctx context.Context, s *bundleState, ds []apply.Desired) []error {
	var errs []error
	for _, d := range ds {
		c.mu.Lock()
		s.inFlight[d.Ref] = true // the deletion event is not drift
		delete(s.applied, d.Ref)
		c.mu.Unlock()
		if err := c.applier.Delete(ctx, d.GVR, d.Ref); err != nil {
			errs = append(errs, err)
		} else {
			c.event(s.key, corev1.EventTypeNormal, "Pruned", "%s deleted: no longer in the bundle", d.Ref)
		}
		c.mu.Lock()
		delete(s.inFlight, d.Ref)
		c.mu.Unlock()
	}
	return errs
}

// watchPreviousKinds starts informers for the kinds that the Bundle's
// ApplySet parent lists, so that objects which left the Bundle while the
// agent was not running are seen, and pruned, on its first sync. A missing
// parent is a Bundle never applied; other errors only mean that such
// leftovers are not pruned, which the status does not hide.
func (c *Controller) watchPreviousKinds(ctx context.Context, s *bundleState, held map[schema.GroupVersionResource]bool) {
	ref := manifests.ObjectRef{Kind: "ConfigMap", Namespace: s.set.ParentNamespace, Name: s.set.ParentName}
	parent, err := c.applier.Get(ctx, apply.Desired{Ref: ref, GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}})
	if err != nil || parent == nil {
		return
	}
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
	if !s.spec.PruneEnabled() {
		return nil
	}
	desiredKeys := map[objKey]bool{}
	for _, d := range p.desired {
		desiredKeys[keyOf(d)] = true
	}
	var errs []error
	for _, gvr := range c.watches.Running() {
		for _, obj := range c.watches.List(gvr) {
			k := objKey{GVR: gvr, Namespace: obj.Namespace, Name: obj.Name}
			if !s.set.Owns(obj.Labels()) || desiredKeys[k] || obj.Deleting {
				continue
			}
			c.mu.Lock()
			kind, known := c.kinds[gvr]
			c.mu.Unlock()
			if _, failed := p.problems[manifests.ObjectRef{Group: gvr.Group, Kind: kind, Namespace: obj.Namespace, Name: obj.Name}]; known && failed {
				continue // declared, but failed this time: not a stray
			}
			ref := manifests.ObjectRef{Group: gvr.Group, Kind: c.applier.KindFor(gvr), Namespace: obj.Namespace, Name: obj.Name}
			if err := c.applier.Delete(ctx, gvr, ref); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// applyParent keeps the ApplySet parent current.
func (c *Controller) applyParent(ctx context.Context, s *bundleState, kinds []schema.GroupKind, namespaces []string) error {
	parent := s.set.Parent(kinds, namespaces)
	d, err := apply.NewDesired(parent, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "")
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
	c.mu.Unlock()
	return nil
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
			c.metrics.WatchedObjects.DeleteLabelValues(gvr.Group, gvr.Version, gvr.Resource)
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

// ensureFinalizer adds the cleanup finalizer to a Bundle.
func (c *Controller) ensureFinalizer(ctx context.Context, u *unstructured.Unstructured) error {
	for _, f := range u.GetFinalizers() {
		if f == Finalizer {
			return nil
		}
	}
	patch := fmt.Appendf(nil, `{"metadata":{"finalizers":[%q],"resourceVersion":%q}}`, Finalizer, u.GetResourceVersion())
	_, err := c.source.Resource(manifests.BundleGVR).Namespace(u.GetNamespace()).
		Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: c.applier.FieldManager()})
	if err != nil {
		return fmt.Errorf("adding finalizer to bundle %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// finalize deletes a deleted Bundle's objects (unless it keeps them), then
// releases the Bundle.
func (c *Controller) finalize(ctx context.Context, key types.NamespacedName, u *unstructured.Unstructured, b *manifests.Bundle) error {
	c.mu.Lock()
	s := c.states[key]
	var owned []apply.Desired
	if s != nil {
		for _, d := range s.desired {
			owned = append(owned, d)
		}
		s.spec.Paused = true // no corrections while we clean up
	}
	c.mu.Unlock()
	if b != nil && !b.Spec.KeepResourcesOnDelete && s != nil {
		if errs := c.pruneObjects(ctx, s, owned); len(errs) > 0 {
			return errors.Join(errs...)
		}
		if errs := c.pruneStrays(ctx, s, &plan{}); len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	if s != nil {
		if err := c.applier.Delete(ctx, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"},
			manifests.ObjectRef{Kind: "ConfigMap", Namespace: s.set.ParentNamespace, Name: s.set.ParentName}); err != nil {
			return err
		}
	}
	var kept []string
	for _, f := range u.GetFinalizers() {
		if f != Finalizer {
			kept = append(kept, f)
		}
	}
	patch := map[string]any{"metadata": map[string]any{"finalizers": kept, "resourceVersion": u.GetResourceVersion()}}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.source.Resource(manifests.BundleGVR).Namespace(key.Namespace).
		Patch(ctx, key.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: c.applier.FieldManager()})
	if err != nil {
		return fmt.Errorf("removing finalizer from bundle %s: %w", key, err)
	}
	c.forget(key)
	return nil
}

// forget drops a Bundle's state and metrics.
func (c *Controller) forget(key types.NamespacedName) {
	c.mu.Lock()
	delete(c.states, key)
	delete(c.byLabel, ownership.BundleLabelValue(key))
	c.mu.Unlock()
	c.metrics.ForgetBundle(key.Namespace, key.Name)
	c.stopUnusedWatches()
	c.watchPods()
}

// errBundleChanged says that a Bundle in the cache no longer declares what
// the state recorded: its next sync takes over.
var errBundleChanged = errors.New("the bundle changed since its last sync")

// render rebuilds the request body of a desired object from the Bundle's
// spec of its last sync, exactly as the sync built it (decode, resolve,
// stamp), while the cached Bundle still has that generation, and checks
// that it is the same content.
func (c *Controller) render(s *bundleState, d apply.Desired) (apply.Desired, error) {
	if d.JSON != nil {
		return d, nil
	}
	// The spec of the last sync serves while the cached Bundle has the
	// same generation: no conversion of the whole Bundle per correction.
	cached, exists, err := c.bundles.GetStore().GetByKey(s.key.String())
	if err != nil || !exists {
		return d, fmt.Errorf("bundle %s: %w", s.key, errBundleChanged)
	}
	c.mu.Lock()
	spec, generation := s.spec, s.generation
	c.mu.Unlock()
	if cached.(*unstructured.Unstructured).GetGeneration() != generation {
		return d, fmt.Errorf("bundle %s: %w", s.key, errBundleChanged)
	}
	obj, err := manifests.DecodeAt(spec.Resources, d.Locator)
	if err != nil {
		return d, fmt.Errorf("%s: %w", d.Ref, errBundleChanged)
	}
	gvr, err := c.applier.Resolve(obj, spec.DefaultNamespace, spec.TargetNamespace)
	if err != nil {
		return d, err
	}
	s.set.Stamp(obj)
	nd, err := apply.NewDesired(obj, gvr, d.Source)
	if err != nil {
		return d, err
	}
	if nd.Hash != d.Hash || nd.Ref != d.Ref {
		return d, fmt.Errorf("%s: %w", d.Ref, errBundleChanged)
	}
	nd.Locator = d.Locator
	return nd, nil
}

// rebaseline records the applied state of an object that a previous agent
// applied with the same content (a restart): the fields we own now. Fields
// that another manager took while no agent was watching are no longer in
// our entry, so the declared map leaves of the desired object that we do
// not own are added back to the recorded set, and lostWhileDown says that
// the object must be checked. Lists are not descended: their keys need the
// schema, so an item taken inside a list while the agent was down is only
// seen with the object's next change.
func (c *Controller) rebaseline(d apply.Desired, cached *watch.Object) (*apply.Applied, bool) {
	raw, err := apply.OwnedFieldsJSON(cached.ManagedFields(), c.applier.FieldManager())
	if err != nil || raw == "" {
		return nil, false
	}
	base := &apply.Applied{ResourceVersion: cached.ResourceVersion, Fields: raw, Hash: d.Hash}
	owned, err := base.FieldSet()
	if err != nil {
		return nil, false
	}
	obj, err := d.Object()
	if err != nil {
		return base, false
	}
	missing := &fieldpath.Set{}
	for _, p := range declaredLeaves(obj.Object) {
		if !ownedOrAtomic(owned, p) {
			missing.Insert(p)
		}
	}
	if missing.Empty() {
		return base, false
	}
	c.logger.V(2).Info("Declared fields lost while no agent watched", "object", d.Ref.String(), "fields", missing.String())
	full, err := owned.Union(missing).ToJSON()
	if err != nil {
		return base, false
	}
	base.Fields = string(full)
	base.ResourceVersion = "" // unknown: the next look at the object must check it
	return base, true
}

// ownedOrAtomic reports whether p, or a map above it, is in the set: an
// atomic map (a LabelSelector) is owned as a whole, its keys are not listed.
func ownedOrAtomic(owned *fieldpath.Set, p fieldpath.Path) bool {
	for i := len(p); i > 0; i-- {
		if owned.Has(p[:i]) {
			return true
		}
	}
	return false
}

// declaredLeaves returns the paths of the scalar values under maps of an
// object: what an apply of it owns, lists aside. Identity fields and status
// are not owned through an apply of the main resource.
func declaredLeaves(obj map[string]any) []fieldpath.Path {
	var out []fieldpath.Path
	var walk func(prefix []any, m map[string]any)
	walk = func(prefix []any, m map[string]any) {
		for k, v := range m {
			path := append(append([]any(nil), prefix...), k)
			switch v := v.(type) {
			case map[string]any:
				walk(path, v)
			case []any, nil:
				// Lists need their keys from the schema; nulls own nothing.
			default:
				if p, err := fieldpath.MakePath(path...); err == nil {
					out = append(out, p)
				}
			}
		}
	}
	for k, v := range obj {
		m, isMap := v.(map[string]any)
		switch {
		case k == "metadata" && isMap:
			for _, sub := range []string{"labels", "annotations"} {
				if mm, ok := m[sub].(map[string]any); ok {
					walk([]any{"metadata", sub}, mm)
				}
			}
		case k == "apiVersion" || k == "kind" || k == "status":
		case isMap:
			walk([]any{k}, m)
		default:
			if p, err := fieldpath.MakePath(k); err == nil && v != nil {
				if _, isList := v.([]any); !isList {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// withoutLostIgnored drops from the object to apply the ignored fields that
// another manager holds and we do not, so that the apply leaves them to that
// manager instead of taking them back. Ignored fields that we still own are
// sent as declared: omitting them would make the server remove them.
func (c *Controller) withoutLostIgnored(d apply.Desired, ignore []string) apply.Desired {
	if len(ignore) == 0 {
		return d
	}
	cached, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
	if !ok {
		return d
	}
	owned, others, err := apply.FieldsByOwner(cached.ManagedFields(), c.applier.FieldManager())
	if err != nil {
		return d
	}
	// Matched as Detect matches: by the path's string form.
	var drop []fieldpath.Path
	others.Difference(owned).Iterate(func(p fieldpath.Path) {
		if ignored(p.String(), ignore) {
			drop = append(drop, p.Copy())
		}
	})
	if len(drop) == 0 {
		return d
	}
	obj, err := d.Object()
	if err != nil {
		return d
	}
	for _, p := range drop {
		removePath(obj.Object, p)
	}
	if out, err := d.WithObject(obj); err == nil {
		return out
	}
	return d
}
