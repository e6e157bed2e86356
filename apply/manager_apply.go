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

// Apply server-side applies one object. With force, fields that another
// manager holds are taken back; without, such a field is a conflict error.
func (a *Applier) Apply(ctx context.Context, d Desired, force bool) Result {
	start := time.Now()
	obj, err := a.patch(ctx, d, metav1.PatchOptions{FieldManager: a.opts.FieldManager, Force: &force})
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
	p := preparer{a: a, t: t, seen: map[manifests.ObjectRef]string{}}
	return p.prepare(objs)
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

type preparer struct {
	a    *Applier
	t    Target
	seen map[manifests.ObjectRef]string // ref → source, to catch duplicates
}

func (p *preparer) prepare(objs []manifests.Object) ([]Desired, []Invalid) {
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

// ObjectFunc applies one prepared object — or decides that it needs no
// write, or refuses it — and says what it did.
type ObjectFunc func(ctx context.Context, d Desired) Result

// StageFunc is called with the objects of a stage once they are prepared
// and before any of them is applied (to start watches, or read ownership
// in one request); it returns the function that applies each of them.
type StageFunc func(ctx context.Context, stage []Desired) ObjectFunc

// ChangeSet is what ApplyAll did.
type ChangeSet struct {
	// Entries has one Result per prepared object, in stage order.
	Entries []Result
	// Invalid are the objects that could not be prepared.
	Invalid []Invalid
	// Errors belong to no single object (a CRD that never became
	// Established).
	Errors []error
}

// EstablishTimeout bounds the wait for the CRDs of a first stage.
const EstablishTimeout = time.Minute

// ApplyAll applies a Bundle's rendered objects in two stages: Namespaces
// and CustomResourceDefinitions first; then, once the CRDs it changed are
// Established and the REST mapping is refreshed, everything else, which may
// live in those namespaces or be of those kinds. Each stage's objects are
// applied concurrently through apply, within the Applier's bound on applies
// in flight, which all callers share: one large Bundle syncing alone uses
// every slot, many small ones share them. ApplyAll takes the objects, as
// Prepare does.
func (a *Applier) ApplyAll(ctx context.Context, objs []manifests.Object, t Target, stage StageFunc) *ChangeSet {
	var first, rest []manifests.Object
	for _, o := range objs {
		if isFirstStage(o.Object.GroupVersionKind().GroupKind()) {
			first = append(first, o)
		} else {
			rest = append(rest, o)
		}
	}
	cs := &ChangeSet{}
	p := preparer{a: a, t: t, seen: map[manifests.ObjectRef]string{}}
	a.applyStage(ctx, &p, first, stage, cs)
	var crds []string
	for _, r := range cs.Entries {
		if r.Err == nil && r.Desired.Ref.GroupKind() == crdKind && r.Action != Unchanged {
			crds = append(crds, r.Desired.Ref.Name)
		}
	}
	if len(crds) > 0 {
		if err := a.WaitEstablished(ctx, crds, EstablishTimeout); err != nil {
			cs.Errors = append(cs.Errors, err)
		}
		a.ResetMapping()
	}
	a.applyStage(ctx, &p, rest, stage, cs)
	return cs
}

var crdKind = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}

func isFirstStage(gk schema.GroupKind) bool {
	return gk == schema.GroupKind{Kind: "Namespace"} || gk == crdKind
}

// applyStage prepares one stage's objects and applies them concurrently,
// the results in a pre-sized slice, one slot each.
func (a *Applier) applyStage(ctx context.Context, p *preparer, objs []manifests.Object, stage StageFunc, cs *ChangeSet) {
	todo, invalid := p.prepare(objs)
	cs.Invalid = append(cs.Invalid, invalid...)
	if len(todo) == 0 {
		return
	}
	one := stage(ctx, todo)
	results := make([]Result, len(todo))
	var wg sync.WaitGroup
	for i, d := range todo {
		wg.Add(1)
		a.slots <- struct{}{}
		go func() {
			defer func() { <-a.slots; wg.Done() }()
			results[i] = one(ctx, d)
		}()
	}
	wg.Wait()
	cs.Entries = append(cs.Entries, results...)
}
