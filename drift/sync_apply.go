package drift

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/scaling"
	"github.com/driftwatch/driftwatch/guard"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/watch"
)

// applyStages applies a Bundle's rendered objects stage by stage
// (apply.Stages): each stage is prepared, planned — watched, announced in
// the inventory, unchanged objects skipped, the others admitted by the
// ownership rules in a batch — and written with one apply.ApplyAll; the
// CRDs a stage wrote are waited for, and the REST mapping refreshed,
// before the next stage is prepared.
func (c *Controller) applyStages(ctx context.Context, s *bundleState, act *apply.Applier, rendered *manifests.Rendered, p *plan) *apply.ChangeSet {
	cs := &apply.ChangeSet{}
	prep := act.NewPreparer(apply.TargetOf(s.set, &rendered.Spec))
	for _, objs := range apply.Stages(rendered.Take()) {
		todo, invalid := prep.Prepare(objs)
		cs.Invalid = append(cs.Invalid, invalid...)
		if len(todo) == 0 {
			continue
		}
		done := c.applyStage(ctx, s, act, &rendered.Spec, todo, p)
		cs.Append(done)
		if crds := written(done, crdKind); len(crds) > 0 {
			if err := act.WaitReady(ctx, crds, apply.WaitTimeout); err != nil {
				cs.Errors = append(cs.Errors, err)
			}
			act.ResetMapping()
		}
	}
	return cs
}

var crdKind = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}

// written returns the objects of kind gk that a stage wrote.
func written(cs *apply.ChangeSet, gk schema.GroupKind) []apply.Desired {
	var out []apply.Desired
	for _, r := range cs.Entries {
		if r.Err == nil && r.Action != apply.Unchanged && r.Action != apply.Refused && r.Desired.Ref.GroupKind() == gk {
			out = append(out, r.Desired)
		}
	}
	return out
}

// stagePlan is one stage's decision per object: a result already (failed,
// refused, unchanged) or a write.
type stagePlan struct {
	todo    []apply.Desired
	results []apply.Result // zero Action: to be written
	admit   []int          // objects no Bundle has applied and the cache does not hold
}

// applyStage plans one prepared stage and writes what needs writing.
func (c *Controller) applyStage(ctx context.Context, s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, todo []apply.Desired, p *plan) *apply.ChangeSet {
	sp := &stagePlan{todo: todo, results: make([]apply.Result, len(todo))}
	unwatched := c.watchStage(ctx, todo, p)
	if err := c.announce(ctx, s, todo); err != nil {
		// Applying objects the inventory does not list could leave
		// strays for good.
		for i, d := range todo {
			sp.results[i] = apply.Result{Desired: d, Action: apply.Failed, Err: err}
		}
		return &apply.ChangeSet{Entries: sp.results}
	}
	for i, d := range todo {
		if err := unwatched[d.GVR]; err != nil {
			sp.results[i] = apply.Result{Desired: d, Action: apply.Failed, Err: err}
			continue
		}
		c.planOne(s, spec, sp, i, p)
	}
	c.admitUnseen(ctx, s, act, spec, sp)
	c.write(ctx, s, act, spec, sp)
	return &apply.ChangeSet{Entries: sp.results}
}

// watchStage registers a stage's kinds, holds and starts their informers
// and files the objects as desired; it returns the resource types that
// could not be watched.
func (c *Controller) watchStage(ctx context.Context, todo []apply.Desired, p *plan) map[schema.GroupVersionResource]error {
	gvrs := map[schema.GroupVersionResource]bool{}
	c.mu.Lock()
	for _, d := range todo {
		p.desired[d.Ref] = d
		c.kinds[d.GVR] = d.Ref.Kind
		c.hold(p.held, d.GVR)
		gvrs[d.GVR] = true
	}
	c.mu.Unlock()
	for _, d := range todo {
		if !p.guarded {
			break
		}
		if n, ok := scaling.Replicas(d.Ref.GroupKind(), d.JSON); ok {
			p.replicas[d.Ref] = n
		}
	}
	unwatched := map[schema.GroupVersionResource]error{}
	for gvr := range gvrs {
		if err := c.watches.Ensure(ctx, gvr); err != nil {
			unwatched[gvr] = err
		}
	}
	return unwatched
}

// planOne decides about one object from the state and the cache alone:
// unchanged (current, or drifted where only reporting is asked for), to be
// written, or to be admitted first (admitUnseen).
func (c *Controller) planOne(s *bundleState, spec *manifests.BundleSpec, sp *stagePlan, i int, p *plan) {
	d := sp.todo[i]
	s.mu.Lock()
	prev := s.applied[d.Ref]
	_, drifted := s.drifted[d.Ref]
	s.mu.Unlock()
	cached, inCache := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
	if prev == nil && inCache {
		prev = c.adoptOwnBaseline(s, d, cached, p)
	}
	// Drifted where only reporting is asked for, or overridden on purpose
	// (guard.OverrideAnnotation), an object is left as it is until the
	// Bundle changes it.
	leave := !drifted || spec.Drift.DetectOnly() || (inCache && cached.Annotation(guard.OverrideAnnotation) != "")
	switch {
	case prev != nil && prev.Hash == d.Hash && inCache && leave:
		sp.results[i] = apply.Result{Desired: d, Action: apply.Unchanged, Applied: prev}
	case prev != nil:
		// Ours already: written without asking again.
	case inCache:
		sp.results[i] = admitted(d, s.set.Admit(cached.Meta(), spec.Adopt), nil)
	default:
		sp.admit = append(sp.admit, i)
	}
}

// admitted is the result of the ownership rules on an object: the zero
// Result (to be written) when err is nil, else refused; readErr says the
// object could not be read to decide.
func admitted(d apply.Desired, err, readErr error) apply.Result {
	switch {
	case readErr != nil:
		return apply.Result{Desired: d, Action: apply.Failed, Err: readErr}
	case err != nil:
		return apply.Result{Desired: d, Action: apply.Refused, Err: err}
	}
	return apply.Result{}
}

// listThreshold is how many unseen objects of one resource type in one
// namespace make a metadata LIST cheaper than a GET each.
const listThreshold = 16

// admitUnseen applies the ownership rules to the objects that neither the
// Bundle applied nor the cache holds (a Bundle's first apply): per resource
// type and namespace with many of them, one metadata LIST of that
// namespace's objects without a driftwatch label (labelled ones are in the
// cache already, so an object in neither does not exist); the rest, and
// the groups whose LIST failed, with a metadata GET each, concurrently.
func (c *Controller) admitUnseen(ctx context.Context, s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, sp *stagePlan) {
	groups := map[objKey][]int{}
	for _, i := range sp.admit {
		d := sp.todo[i]
		g := objKey{GVR: d.GVR, Namespace: d.Ref.Namespace}
		groups[g] = append(groups[g], i)
	}
	var get []int
	for g, idx := range groups {
		if len(idx) < listThreshold {
			get = append(get, idx...)
			continue
		}
		objs, err := act.ListMetadata(ctx, g.GVR, g.Namespace, "!"+ownership.BundleLabel)
		if err != nil {
			c.logger.V(2).Info("Metadata list failed; checking objects one by one", "resource", g.GVR, "namespace", g.Namespace, "err", err)
			get = append(get, idx...)
			continue
		}
		for _, i := range idx {
			var existing metav1.Object
			if o := objs[sp.todo[i].Ref.Name]; o != nil {
				existing = o
			}
			sp.results[i] = admitted(sp.todo[i], s.set.Admit(existing, spec.Adopt), nil)
		}
	}
	if len(get) == 0 {
		return
	}
	ds := make([]apply.Desired, len(get))
	for j, i := range get {
		ds[j] = sp.todo[i]
	}
	for j, l := range act.GetAllMetadata(ctx, ds) {
		sp.results[get[j]] = admitted(ds[j], s.set.Admit(l.Object, spec.Adopt), l.Err)
	}
}

// write applies the objects the plan left to write, marked in flight,
// and records what the server returned before the marks are released;
// then it looks at them in the cache once more: an edit whose event came
// while they were marked is drift all the same.
func (c *Controller) write(ctx context.Context, s *bundleState, act *apply.Applier, spec *manifests.BundleSpec, sp *stagePlan) {
	var idx []int
	var ds []apply.Desired
	for i, r := range sp.results {
		if r.Action == "" {
			idx = append(idx, i)
			ds = append(ds, sp.todo[i])
		}
	}
	if len(ds) == 0 {
		return
	}
	refs := make([]manifests.ObjectRef, len(ds))
	for j, d := range ds {
		refs[j] = d.Ref
		ds[j] = c.withoutLostIgnored(d, c.ignoreFor(s, d.Ref))
	}
	_ = c.claimed(s, refs, func() error {
		cs := act.ApplyAll(ctx, ds, apply.ApplyOptions{Force: spec.Drift.ForceEnabled()})
		s.mu.Lock()
		defer s.mu.Unlock()
		for j, r := range cs.Entries {
			c.observeApply(r)
			r.Desired = sp.todo[idx[j]] // as declared, not as sent
			sp.results[idx[j]] = r
			if r.Err == nil && r.Applied != nil {
				s.applied[r.Desired.Ref] = r.Applied
			}
		}
		return nil
	})
	c.recheck(ds)
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
	s.mu.Lock()
	s.applied[d.Ref] = base
	s.mu.Unlock()
	if lostWhileDown {
		p.recheck = append(p.recheck, d)
	}
	return base
}
