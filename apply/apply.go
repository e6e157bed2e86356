package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unique"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/driftwatch/driftwatch/manifests"
)

// Options configure an Applier.
type Options struct {
	// FieldManager is the server-side apply field manager.
	FieldManager string
	// Concurrency bounds the applies in flight: shared by every sync, so
	// that one large Bundle can use them all.
	Concurrency int
}

// DefaultOptions returns the options driftwatch runs with.
func DefaultOptions() Options { return Options{FieldManager: "driftwatch", Concurrency: 8} }

// Applier applies desired objects with server-side apply.
type Applier struct {
	client   dynamic.Interface
	metadata metadata.Interface
	mapper   meta.ResettableRESTMapper
	opts     Options
	// mappings caches the mapper's answers per GVK: the discovery mapper
	// allocates (NoMatch errors included) on every call, and a sync of
	// thousands of objects of a few kinds asked it once per object.
	mappings sync.Map // schema.GroupVersionKind → *meta.RESTMapping
}

// New returns an Applier writing through client, listing metadata through
// meta (nil: ListMetadata is unavailable) and resolving kinds through
// mapper (reset after CRDs are applied).
func New(client dynamic.Interface, meta metadata.Interface, mapper meta.ResettableRESTMapper, opts Options) *Applier {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	return &Applier{client: client, metadata: meta, mapper: mapper, opts: opts}
}

// ListMetadata lists the metadata of the objects of gvr in namespace that
// match selector, in pages: one request instead of a GET per object when
// many objects that the agent has not seen yet must be checked for
// ownership.
func (a *Applier) ListMetadata(ctx context.Context, gvr schema.GroupVersionResource, namespace, selector string) (map[string]*metav1.PartialObjectMetadata, error) {
	if a.metadata == nil {
		return nil, fmt.Errorf("no metadata client")
	}
	out := map[string]*metav1.PartialObjectMetadata{}
	opts := metav1.ListOptions{Limit: 500, LabelSelector: selector}
	for {
		list, err := a.metadata.Resource(gvr).Namespace(namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing %s in %q: %w", gvr.Resource, namespace, err)
		}
		for i := range list.Items {
			out[list.Items[i].Name] = &list.Items[i]
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			return out, nil
		}
	}
}

// Concurrency returns how many applies may be in flight at once.
func (a *Applier) Concurrency() int { return a.opts.Concurrency }

// KindFor returns the kind of a resource, for messages.
func (a *Applier) KindFor(gvr schema.GroupVersionResource) string {
	if gvk, err := a.mapper.KindFor(gvr); err == nil {
		return gvk.Kind
	}
	return gvr.Resource
}

// FieldManager returns the field manager the Applier applies as.
func (a *Applier) FieldManager() string { return a.opts.FieldManager }

// Action is what an apply did to one object.
type Action string

// The actions.
const (
	Created    Action = "Created"
	Configured Action = "Configured"
	Unchanged  Action = "Unchanged"
	Deleted    Action = "Deleted"
	Failed     Action = "Failed"
	Refused    Action = "Refused"
)

// Desired is one object ready to apply: stamped, its namespace resolved.
// The object is held as the JSON that is sent — a fraction of the memory of
// an unstructured map, which matters at tens of thousands of objects.
type Desired struct {
	Ref        manifests.ObjectRef
	GVR        schema.GroupVersionResource
	APIVersion string
	// JSON is the apply request body. Long-lived copies drop it (see
	// Locator) to keep memory per owned object small.
	JSON []byte
	// Locator finds the object in its Bundle again.
	Locator manifests.Locator
	// Hash identifies the desired content; equal hashes need no write.
	Hash string
	// Source is where the object was declared ("file.yaml#2").
	Source string
}

// NewDesired prepares obj for applying: its hash goes into HashAnnotation
// and the object is serialised once.
func NewDesired(obj *unstructured.Unstructured, gvr schema.GroupVersionResource, source string) (Desired, error) {
	hash, err := Hash(obj)
	if err != nil {
		return Desired{}, err
	}
	SetHash(obj, hash)
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return Desired{}, err
	}
	// Kept per owned object for as long as it is owned: the strings that
	// every object of a kind and namespace repeats are stored once.
	ref := manifests.RefOf(obj)
	ref.Group, ref.Kind, ref.Namespace = intern(ref.Group), intern(ref.Kind), intern(ref.Namespace)
	gvr = schema.GroupVersionResource{Group: intern(gvr.Group), Version: intern(gvr.Version), Resource: intern(gvr.Resource)}
	return Desired{Ref: ref, GVR: gvr, APIVersion: intern(obj.GetAPIVersion()), JSON: body, Hash: hash, Source: source}, nil
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Object decodes the object to apply.
func (d Desired) Object() (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(d.JSON); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Ref, err)
	}
	return u, nil
}

// WithObject returns d applying obj instead (same identity and hash).
func (d Desired) WithObject(obj *unstructured.Unstructured) (Desired, error) {
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return d, err
	}
	d.JSON = body
	return d, nil
}

// Applied is the recorded applied state of one object: what the server
// returned after our last apply.
type Applied struct {
	ResourceVersion string
	// Fields is our field manager's Apply entry (fieldsV1 JSON): what we
	// own. Kept serialised, parsed only when an event needs it; built with
	// the fieldsv1string tag, apimachinery interns these strings, and
	// objects of the same shape share one.
	Fields string
	// Hash of the desired object that was applied.
	Hash string
}

// Result is the outcome of applying one object.
type Result struct {
	Desired Desired
	Action  Action
	Applied *Applied
	Err     error
	// Duration of the API call.
	Duration time.Duration
}

// Resolve finds the resource of obj and settles its namespace: targetNS
// forces every namespaced object there (and refuses cluster-scoped ones),
// defaultNS fills in a namespace that the object does not name.
func (a *Applier) Resolve(obj *unstructured.Unstructured, defaultNS, targetNS string) (schema.GroupVersionResource, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapping(gvk)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return schema.GroupVersionResource{}, fmt.Errorf("unknown kind %s: no such resource in the target cluster", gvk)
		}
		return schema.GroupVersionResource{}, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		switch {
		case targetNS != "":
			obj.SetNamespace(targetNS)
		case obj.GetNamespace() == "":
			if defaultNS == "" {
				defaultNS = "default"
			}
			obj.SetNamespace(defaultNS)
		}
	} else {
		if targetNS != "" {
			return schema.GroupVersionResource{}, fmt.Errorf("%s is cluster-scoped, but the bundle sets targetNamespace %q", gvk.Kind, targetNS)
		}
		obj.SetNamespace("")
	}
	return m.Resource, nil
}

// HashAnnotation on an owned object holds the Hash of the desired content
// last applied, so that a restarted agent can tell, from its cache alone,
// that an object is current and need not be written.
const HashAnnotation = "driftwatch.io/applied-hash"

// SetHash records hash in obj's HashAnnotation.
func SetHash(obj *unstructured.Unstructured, hash string) {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[HashAnnotation] = hash
	obj.SetAnnotations(ann)
}

// Hash returns a digest of an object's desired content.
func Hash(obj *unstructured.Unstructured) (string, error) {
	b, err := json.Marshal(obj.Object) // encoding/json sorts map keys: stable
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}

// ResourceFor returns the preferred resource of a group-kind.
func (a *Applier) ResourceFor(gk schema.GroupKind) (schema.GroupVersionResource, error) {
	m, err := a.mapper.RESTMapping(gk)
	if err != nil {
		return schema.GroupVersionResource{}, err
	}
	return m.Resource, nil
}

// ResetMapping forgets the cached REST mapping, after CRDs changed.
func (a *Applier) ResetMapping() {
	a.mapper.Reset()
	a.mappings.Clear()
}

func (a *Applier) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	if m, ok := a.mappings.Load(gvk); ok {
		return m.(*meta.RESTMapping), nil
	}
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err // misses are not cached: the kind may appear
	}
	a.mappings.Store(gvk, m)
	return m, nil
}

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

// DryRun server-side applies without persisting and returns what the
// server would store.
func (a *Applier) DryRun(ctx context.Context, d Desired, force bool) (*unstructured.Unstructured, error) {
	obj, err := a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.ApplyPatchType, d.JSON,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager, Force: &force, DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return nil, fmt.Errorf("%s dry-run failed: %w", d.Ref, err)
	}
	return obj, nil
}

// Get reads the live object, or returns nil when it does not exist.
func (a *Applier) Get(ctx context.Context, d Desired) (*unstructured.Unstructured, error) {
	obj, err := a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Get(ctx, d.Ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Ref, err)
	}
	return obj, nil
}

// Delete deletes an owned object in the background; a missing object is
// not an error.
func (a *Applier) Delete(ctx context.Context, gvr schema.GroupVersionResource, ref manifests.ObjectRef) error {
	policy := metav1.DeletePropagationBackground
	err := a.client.Resource(gvr).Namespace(ref.Namespace).Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s delete failed: %w", ref, err)
	}
	return nil
}

// WaitEstablished waits until the named CRDs are Established.
func (a *Applier) WaitEstablished(ctx context.Context, names []string, timeout time.Duration) error {
	crds := a.client.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
			crd, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CustomResourceDefinition %s not Established: %w", name, err)
		}
	}
	return nil
}

// OwnedFields returns the fields that manager owns by Apply on the main
// resource of obj, from its managedFields.
func OwnedFields(managedFields []metav1.ManagedFieldsEntry, manager string) (*fieldpath.Set, error) {
	set := &fieldpath.Set{}
	for _, e := range managedFields {
		if e.Manager != manager || e.Operation != metav1.ManagedFieldsOperationApply || e.Subresource != "" || e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, fmt.Errorf("managedFields of %s: %w", manager, err)
		}
		set = set.Union(s)
	}
	return set, nil
}

// FieldsByOwner splits obj's managedFields into what manager owns by
// Apply on the main resource and what all other entries hold.
func FieldsByOwner(managedFields []metav1.ManagedFieldsEntry, manager string) (ours, others *fieldpath.Set, err error) {
	ours, others = &fieldpath.Set{}, &fieldpath.Set{}
	for _, e := range managedFields {
		if e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, nil, fmt.Errorf("managedFields of %s: %w", e.Manager, err)
		}
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
			ours = ours.Union(s)
		} else {
			others = others.Union(s)
		}
	}
	return ours, others, nil
}

// OwnedFieldsJSON is OwnedFields serialised as fieldsV1 JSON; with a
// single entry (the usual case) its string is returned as it is.
func OwnedFieldsJSON(managedFields []metav1.ManagedFieldsEntry, manager string) (string, error) {
	var raw string
	n := 0
	for _, e := range managedFields {
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" && e.FieldsV1 != nil {
			raw = e.FieldsV1.GetRawString()
			n++
		}
	}
	if n <= 1 {
		return raw, nil
	}
	set, err := OwnedFields(managedFields, manager)
	if err != nil {
		return "", err
	}
	b, err := set.ToJSON()
	return string(b), err
}

// FieldSet parses the recorded fields.
func (a *Applied) FieldSet() (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	if len(a.Fields) == 0 {
		return s, nil
	}
	if err := s.FromJSON(strings.NewReader(a.Fields)); err != nil {
		return nil, err
	}
	return s, nil
}

// IsConflict reports whether err is a server-side apply conflict.
func IsConflict(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && apierrors.IsConflict(err)
}

// ReplaceListItems removes list items that another manager added, named
// by field paths ending in a key (".spec.ports[port=444,protocol=\"TCP\"]"),
// and puts back the desired items of the same lists, in one strategic merge
// patch. Server-side apply never removes fields another manager owns: this
// is the one write that does, used only to undo a changed list key (a
// Service port, a renamed container) before re-applying ours. Our items go
// in the same write so that a list that must not be empty (Service ports)
// never is. Built-in kinds get a strategic merge patch; custom resources,
// which do not accept one, a JSON patch whose test operations make it fail
// rather than remove the wrong item if the list moved since it was read.
func (a *Applier) ReplaceListItems(ctx context.Context, d Desired, foreign []fieldpath.Path) error {
	if !SupportsStrategicMerge(schema.FromAPIVersionAndKind(d.APIVersion, d.Ref.Kind)) {
		return a.replaceListItemsJSONPatch(ctx, d, foreign)
	}
	patch := map[string]any{}
	lists := map[string]bool{}
	for _, p := range foreign {
		if len(p) == 0 || p[len(p)-1].Key == nil {
			return fmt.Errorf("%s: %s is not a list item", d.Ref, p)
		}
		del := map[string]any{"$patch": "delete"}
		for _, f := range *p[len(p)-1].Key {
			del[f.Name] = f.Value.Unstructured()
		}
		list := p[:len(p)-1]
		items := []any{del}
		if !lists[list.String()] {
			lists[list.String()] = true
			obj, err := d.Object()
			if err != nil {
				return err
			}
			items = append(items, listAt(obj.Object, list)...)
		}
		if err := addToList(patch, list, items); err != nil {
			return fmt.Errorf("%s: %w", d.Ref, err)
		}
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.StrategicMergePatchType, body,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager})
	if err != nil {
		return fmt.Errorf("%s: replacing list items %v: %w", d.Ref, foreign, err)
	}
	return nil
}

// replaceListItemsJSONPatch is ReplaceListItems for custom resources.
func (a *Applier) replaceListItemsJSONPatch(ctx context.Context, d Desired, foreign []fieldpath.Path) error {
	live, err := a.Get(ctx, d)
	if err != nil || live == nil {
		return err
	}
	desired, err := d.Object()
	if err != nil {
		return err
	}
	type listOps struct {
		pointer string
		items   []any
		remove  []int
		keys    []string
		list    fieldpath.Path
	}
	lists := map[string]*listOps{}
	var order []string
	for _, p := range foreign {
		if len(p) == 0 || p[len(p)-1].Key == nil {
			return fmt.Errorf("%s: %s is not a list item", d.Ref, p)
		}
		list := p[:len(p)-1]
		l, ok := lists[list.String()]
		if !ok {
			pointer, items, found := pointerTo(live.Object, list)
			if !found {
				continue // the list is gone: nothing of theirs to remove
			}
			l = &listOps{pointer: pointer, items: items, list: list}
			for _, f := range *p[len(p)-1].Key {
				l.keys = append(l.keys, f.Name)
			}
			lists[list.String()] = l
			order = append(order, list.String())
		}
		for i, it := range l.items {
			if m, ok := it.(map[string]any); ok && keyMatches(m, p[len(p)-1]) {
				l.remove = append(l.remove, i)
			}
		}
	}
	var ops []map[string]any
	for _, k := range order {
		l := lists[k]
		sort.Sort(sort.Reverse(sort.IntSlice(l.remove)))
		for _, i := range l.remove {
			item := l.items[i].(map[string]any)
			for _, key := range l.keys {
				ops = append(ops, map[string]any{"op": "test", "path": fmt.Sprintf("%s/%d/%s", l.pointer, i, escapePointer(key)), "value": item[key]})
			}
			ops = append(ops, map[string]any{"op": "remove", "path": fmt.Sprintf("%s/%d", l.pointer, i)})
		}
	}
	for _, k := range order {
		l := lists[k]
		for _, ours := range listAt(desired.Object, l.list) {
			m, ok := ours.(map[string]any)
			if ok && !containsKey(l.items, m, l.keys) {
				ops = append(ops, map[string]any{"op": "add", "path": l.pointer + "/-", "value": m})
			}
		}
	}
	if len(ops) == 0 {
		return nil
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.JSONPatchType, body,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager})
	if err != nil {
		return fmt.Errorf("%s: replacing list items %v: %w", d.Ref, foreign, err)
	}
	return nil
}

// pointerTo returns the JSON pointer of the list at path in obj, and the
// list, resolving key elements to indexes.
func pointerTo(obj map[string]any, path fieldpath.Path) (string, []any, bool) {
	var cur any = obj
	pointer := ""
	for _, pe := range path {
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return "", nil, false
			}
			cur = m[*pe.FieldName]
			pointer += "/" + escapePointer(*pe.FieldName)
		case pe.Key != nil:
			list, _ := cur.([]any)
			found := false
			for i, it := range list {
				if m, ok := it.(map[string]any); ok && keyMatches(m, pe) {
					cur, pointer, found = m, fmt.Sprintf("%s/%d", pointer, i), true
					break
				}
			}
			if !found {
				return "", nil, false
			}
		default:
			return "", nil, false
		}
	}
	list, ok := cur.([]any)
	return pointer, list, ok
}

func containsKey(list []any, item map[string]any, keys []string) bool {
	for _, it := range list {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		same := true
		for _, k := range keys {
			if fmt.Sprint(m[k]) != fmt.Sprint(item[k]) {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func escapePointer(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

// SupportsStrategicMerge reports whether the API server accepts strategic
// merge patches for gvk: built-in kinds only.
func SupportsStrategicMerge(gvk schema.GroupVersionKind) bool { return scheme.Scheme.Recognizes(gvk) }

// addToList merges into patch the strategic-merge structure that reaches
// the list at path (field names as nested maps, each key element as a
// one-item list holding the key's fields) and appends items to that list.
func addToList(patch map[string]any, path fieldpath.Path, items []any) error {
	cur := patch
	for i := 0; i < len(path); i++ {
		pe := path[i]
		if pe.FieldName == nil {
			return fmt.Errorf("cannot express %s as a strategic merge patch", path)
		}
		if i == len(path)-1 {
			list, _ := cur[*pe.FieldName].([]any)
			cur[*pe.FieldName] = append(list, items...)
			return nil
		}
		if next := path[i+1]; next.Key != nil {
			item := map[string]any{}
			for _, f := range *next.Key {
				item[f.Name] = f.Value.Unstructured()
			}
			list, _ := cur[*pe.FieldName].([]any)
			cur[*pe.FieldName] = append(list, item)
			cur = item
			i++ // the key element is consumed
			continue
		}
		m, ok := cur[*pe.FieldName].(map[string]any)
		if !ok {
			m = map[string]any{}
			cur[*pe.FieldName] = m
		}
		cur = m
	}
	return fmt.Errorf("empty path")
}

// listAt returns the list at path in an unstructured object, or nil.
func listAt(obj map[string]any, path fieldpath.Path) []any {
	var cur any = obj
	for _, pe := range path {
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[*pe.FieldName]
		case pe.Key != nil:
			list, _ := cur.([]any)
			cur = nil
			for _, it := range list {
				m, ok := it.(map[string]any)
				if ok && keyMatches(m, pe) {
					cur = m
					break
				}
			}
		default:
			return nil
		}
	}
	list, _ := cur.([]any)
	return list
}

func keyMatches(item map[string]any, pe fieldpath.PathElement) bool {
	for _, f := range *pe.Key {
		if fmt.Sprint(item[f.Name]) != fmt.Sprint(f.Value.Unstructured()) {
			return false
		}
	}
	return true
}
