package apply

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// Apply server-side applies one object as opts say.
func (a *Applier) Apply(ctx context.Context, d Desired, opts ApplyOptions) Result {
	start := time.Now()
	obj, err := a.patch(ctx, d, metav1.PatchOptions{FieldManager: a.opts.FieldManager, Force: &opts.Force})
	r := Result{Desired: d, Duration: time.Since(start)}
	if err != nil {
		if apierrors.IsNotFound(err) {
			// An apply creates what is missing, so a 404 means the
			// resource type (or the namespace) is gone: map it anew.
			a.mappings.Delete(schema.FromAPIVersionAndKind(d.APIVersion, d.Ref.Kind))
			a.mapper.Reset()
		}
		r.Action, r.Err = Failed, fmt.Errorf("%s apply failed: %w", d.Ref, err)
		return r
	}
	fields, err := OwnedFieldsJSON(obj.GetManagedFields(), a.opts.FieldManager)
	if err != nil {
		r.Action, r.Err = Failed, fmt.Errorf("%s: %w", d.Ref, err)
		return r
	}
	r.Action = Configured
	if obj.GetGeneration() <= 1 && obj.GetCreationTimestamp().After(start.Add(-time.Second)) {
		r.Action = Created
	}
	r.Applied = &Applied{ResourceVersion: obj.GetResourceVersion(),
		Fields: fields, Hash: d.Hash}
	return r
}

// patch sends the apply. Only the result's metadata is read, so it is
// asked for as metadata only, in protobuf where the server speaks it: the
// API server encodes, and the agent decodes, a fraction of the object.
func (a *Applier) patch(ctx context.Context, d Desired, opts metav1.PatchOptions) (metav1.Object, error) {
	if a.metadata == nil {
		return a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.ApplyPatchType, d.JSON, opts)
	}
	return a.metadata.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.ApplyPatchType, d.JSON, opts)
}

// Target says where a Bundle's objects go: the ApplySet that stamps them
// and the namespaces of its spec.
type Target struct {
	Set ownership.Set
	// DefaultNamespace is for namespaced objects that name none;
	// TargetNamespace forces every namespaced object into one.
	DefaultNamespace, TargetNamespace string
}

// NamespaceOf is the namespace a namespaced object that names ns goes to:
// TargetNamespace when set, else its own, else DefaultNamespace, else
// "default". The one rule: the agent, driftwatch diff and driftwatch
// render all place objects by it.
func (t Target) NamespaceOf(ns string) string {
	switch {
	case t.TargetNamespace != "":
		return t.TargetNamespace
	case ns != "":
		return ns
	case t.DefaultNamespace != "":
		return t.DefaultNamespace
	}
	return "default"
}

// TargetOf is where the objects of a Bundle with this effective spec go:
// targetNamespace forces every namespaced object into it; objects that
// name no namespace go to defaultNamespace — for a Helm chart, to the
// release's namespace, as Helm puts them.
func TargetOf(set ownership.Set, spec *manifests.BundleSpec) Target {
	t := Target{Set: set, DefaultNamespace: spec.DefaultNamespace, TargetNamespace: spec.TargetNamespace}
	if spec.Helm != nil {
		t.DefaultNamespace = spec.ReleaseNamespace()
	}
	return t
}

// Invalid is a rendered object that cannot be applied as it is.
type Invalid struct {
	Ref    manifests.ObjectRef
	Source string
	Err    error
}

func (i Invalid) Error() string { return i.Source + ": " + i.Err.Error() }

// Prepare turns rendered objects into objects to apply: resource resolved
// through the REST mapping, namespace settled, ownership labels stamped,
// content hashed and serialised. Objects that cannot be prepared, and the
// second declaration of an object, come back as Invalid. Prepare takes the
// objects: each one's map is dropped once it is serialised, so that a
// large Bundle's decoded maps do not all live at once.
func (a *Applier) Prepare(objs []manifests.Object, t Target) ([]Desired, []Invalid) {
	return a.NewPreparer(t).Prepare(objs)
}

// Preparer prepares the objects of one Bundle stage by stage: a later
// stage's kinds may only resolve once an earlier stage's CRDs are
// Established, and an object declared in two stages is still caught.
type Preparer struct {
	a    *Applier
	t    Target
	seen map[manifests.ObjectRef]string // ref → source, to catch duplicates
}

// NewPreparer returns a Preparer for the objects of one Bundle.
func (a *Applier) NewPreparer(t Target) *Preparer {
	return &Preparer{a: a, t: t, seen: map[manifests.ObjectRef]string{}}
}

// PrepareOne prepares one object as Prepare does and returns it as it
// would be applied.
func (a *Applier) PrepareOne(obj *unstructured.Unstructured, t Target) (*unstructured.Unstructured, error) {
	d, invalid := a.Prepare([]manifests.Object{{Object: obj}}, t)
	if len(invalid) > 0 {
		return nil, invalid[0]
	}
	return d[0].Object()
}

// PrepareChartObject prepares one object of a Helm chart's release as
// PrepareOne does. A kind the cluster does not serve yet (the chart's own
// CRD brings it) is left as Helm rendered it — the sync that follows the
// release reports it — unless it names a namespace that t does not allow.
func (a *Applier) PrepareChartObject(obj *unstructured.Unstructured, t Target) (*unstructured.Unstructured, error) {
	p, err := a.PrepareOne(obj, t)
	if err == nil || !errors.Is(err, ErrUnknownKind) {
		return p, err
	}
	if ns := obj.GetNamespace(); t.TargetNamespace != "" && ns != "" && ns != t.TargetNamespace {
		return nil, fmt.Errorf("%s %s/%s: names namespace %q, but the bundle sets targetNamespace %q", obj.GetKind(), ns, obj.GetName(), ns, t.TargetNamespace)
	}
	return obj, nil
}

// Prepare prepares objs as Applier.Prepare does.
func (p *Preparer) Prepare(objs []manifests.Object) ([]Desired, []Invalid) {
	out := make([]Desired, 0, len(objs))
	var invalid []Invalid
	for i, o := range objs {
		obj := o.Object
		objs[i].Object = nil
		ref := manifests.RefOf(obj)
		gvr, err := p.a.Resolve(obj, p.t.DefaultNamespace, p.t.TargetNamespace)
		ref.Namespace = obj.GetNamespace()
		if err != nil {
			invalid = append(invalid, Invalid{Ref: ref, Source: o.Source, Err: err})
			continue
		}
		if prev, dup := p.seen[ref]; dup {
			invalid = append(invalid, Invalid{Ref: ref, Source: o.Source,
				Err: fmt.Errorf("declared twice (also in %s); the first one is applied", prev)})
			continue
		}
		if err := p.t.Set.Reserved(ref); err != nil {
			invalid = append(invalid, Invalid{Ref: ref, Source: o.Source, Err: err})
			continue
		}
		p.seen[ref] = o.Source
		p.t.Set.Stamp(obj)
		d, err := NewDesired(obj, gvr, o.Source)
		if err != nil {
			invalid = append(invalid, Invalid{Ref: ref, Source: o.Source, Err: err})
			continue
		}
		d.Locator = o.Locator
		out = append(out, d)
	}
	return out, invalid
}

// ApplyOptions say how ApplyAll writes.
type ApplyOptions struct {
	// Force takes back fields that another manager holds; without it such
	// a field is a conflict error.
	Force bool
}

// ChangeSet is what ApplyAll did.
type ChangeSet struct {
	// Entries has one Result per object, in the order given.
	Entries []Result
	// Invalid are the objects that could not be prepared (Stage).
	Invalid []Invalid
	// Errors belong to no single object (a stage that never became ready).
	Errors []error
}

// Append adds another stage's outcome.
func (cs *ChangeSet) Append(other *ChangeSet) {
	cs.Entries = append(cs.Entries, other.Entries...)
	cs.Invalid = append(cs.Invalid, other.Invalid...)
	cs.Errors = append(cs.Errors, other.Errors...)
}

// Stages splits a Bundle's rendered objects into the stages they are
// applied in, as fluxcd/pkg's ssa ApplyAllStaged does: Namespaces and
// CustomResourceDefinitions first, then everything else, which may live in
// those namespaces or be of those kinds. The caller prepares and applies
// the first stage, waits for it (WaitReady) and resets the REST mapping
// before it prepares the second.
func Stages(objs []manifests.Object) [][]manifests.Object {
	var first, rest []manifests.Object
	for _, o := range objs {
		if isFirstStage(o.Object.GroupVersionKind().GroupKind()) {
			first = append(first, o)
		} else {
			rest = append(rest, o)
		}
	}
	return [][]manifests.Object{first, rest}
}

var crdKind = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}

func isFirstStage(gk schema.GroupKind) bool {
	return gk == schema.GroupKind{Kind: "Namespace"} || gk == crdKind
}

// ApplyAll server-side applies prepared objects concurrently, within the
// Applier's bound on applies in flight, which all callers share: one large
// Bundle syncing alone uses every slot, many small ones share them. It
// waits for every apply it started; once ctx ends, the objects that did
// not get a slot fail with ctx's error.
func (a *Applier) ApplyAll(ctx context.Context, objs []Desired, opts ApplyOptions) *ChangeSet {
	results := make([]Result, len(objs))
	a.bounded(ctx, len(objs), func(i int) { results[i] = a.Apply(ctx, objs[i], opts) }, func(i int, err error) {
		results[i] = Result{Desired: objs[i], Action: Failed, Err: fmt.Errorf("%s not applied: %w", objs[i].Ref, err)}
	})
	return &ChangeSet{Entries: results}
}

// bounded runs do(i) for every i below n concurrently, within the
// Applier's bound on requests in flight that every caller shares, and
// waits for them; once ctx ends, each i that got no slot gets skip(i,
// ctx.Err()) instead.
func (a *Applier) bounded(ctx context.Context, n int, do func(i int), skip func(i int, err error)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			skip(i, ctx.Err())
			continue
		}
		wg.Go(func() {
			defer func() { <-a.slots }()
			do(i)
		})
	}
	wg.Wait()
}

// Lookup is the live metadata of one object, or why it could not be read.
type Lookup struct {
	Object metav1.Object // nil: the object does not exist
	Err    error
}

// GetAllMetadata reads the metadata of objects concurrently, within the
// bound ApplyAll uses, one Lookup per object in the order given.
func (a *Applier) GetAllMetadata(ctx context.Context, objs []Desired) []Lookup {
	out := make([]Lookup, len(objs))
	a.bounded(ctx, len(objs), func(i int) { out[i] = a.lookup(ctx, objs[i]) }, func(i int, err error) { out[i].Err = err })
	return out
}

// lookup reads one object's metadata: metadata only where the Applier has
// the client for it.
func (a *Applier) lookup(ctx context.Context, d Desired) Lookup {
	if a.metadata == nil {
		obj, err := a.Get(ctx, d)
		if obj == nil {
			return Lookup{Err: err}
		}
		return Lookup{Object: obj, Err: err}
	}
	obj, err := a.GetMetadata(ctx, d.GVR, d.Ref)
	if obj == nil {
		return Lookup{Err: err}
	}
	return Lookup{Object: obj, Err: err}
}
