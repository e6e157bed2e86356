package watch

import (
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"
	"weak"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Object is what the cache keeps of an owned object: its identity, labels,
// driftwatch's own annotations, owner references, deletion state and
// managedFields — what drift detection, ownership and status read, and
// nothing else. It is built by Compact from the PartialObjectMetadata the
// API server sends, and is several times smaller: memory per owned object
// is one of driftwatch's headline figures.
//
// Objects in the cache are shared and must not be modified.
type Object struct {
	Namespace       string
	Name            string
	UID             types.UID
	ResourceVersion string
	Generation      int64
	// Deleting is set once the object has a deletion timestamp.
	Deleting bool
	// labels are shared with other objects that carry the same labels.
	labels *labelSet
	// Annotations are those whose key starts with KeepAnnotationPrefix.
	Annotations     []Annotation
	OwnerReferences []metav1.OwnerReference
	// managedFields are shared with other objects that hold the same.
	managedFields *fieldsList
	// Readiness is the object's kstatus verdict, for kinds watched with
	// their status (Options.NeedsStatus); nil for metadata-only kinds,
	// whose readiness is their existence.
	Readiness *Readiness
	// Pod holds what crash detection needs of a Pod seen by a pod informer
	// (EnsurePods) or an owned Pod; nil otherwise.
	Pod *PodState
	// ScaleTarget is what a HorizontalPodAutoscaler seen by the
	// autoscaler informer (EnsurePods) scales; nil otherwise.
	ScaleTarget *ScaleTarget
}

// ScaleTarget is the object an autoscaler scales, in its namespace.
type ScaleTarget struct {
	APIVersion, Kind, Name string
}

// Readiness is the kstatus verdict on one object.
type Readiness struct {
	// Status is kstatus' Current, InProgress, Failed, Terminating or Unknown.
	Status string
	// Message says why, when not Current.
	Message string
}

// Ready reports whether the verdict is Current.
func (r *Readiness) Ready() bool { return r == nil || r.Status == "Current" }

// Annotation is one kept annotation.
type Annotation struct{ Key, Value string }

// Labels returns the object's labels. The map is shared with other cached
// objects: read only.
func (o *Object) Labels() map[string]string {
	if o.labels == nil {
		return nil
	}
	return o.labels.m
}

// ManagedFields returns the object's managedFields, without their
// timestamps. The list is shared with other cached objects: read only.
func (o *Object) ManagedFields() []metav1.ManagedFieldsEntry {
	if o.managedFields == nil {
		return nil
	}
	return o.managedFields.entries
}

// Annotation returns the value of a kept annotation, or "".
func (o *Object) Annotation(key string) string {
	for _, a := range o.Annotations {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// GetObjectKind implements runtime.Object; cached objects carry no type.
func (o *Object) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (o *Object) DeepCopyObject() runtime.Object {
	out := *o // label sets, managedFields lists, readiness and pod state are immutable and stay shared
	out.Annotations = append([]Annotation(nil), o.Annotations...)
	if o.OwnerReferences != nil {
		out.OwnerReferences = make([]metav1.OwnerReference, len(o.OwnerReferences))
		for i := range o.OwnerReferences {
			o.OwnerReferences[i].DeepCopyInto(&out.OwnerReferences[i])
		}
	}
	return &out
}

// GetObjectMeta implements metav1.ObjectMetaAccessor, so that the
// informer's key functions and code that takes a metav1.Object can read a
// cached object. The ObjectMeta is built on each call and shares the
// object's maps and slices: read only.
func (o *Object) GetObjectMeta() metav1.Object { return o.Meta() }

// Meta returns the object's metadata as an ObjectMeta (read only; see
// GetObjectMeta).
func (o *Object) Meta() *metav1.ObjectMeta {
	m := &metav1.ObjectMeta{
		Namespace: o.Namespace, Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion,
		Generation: o.Generation, Labels: o.Labels(), OwnerReferences: o.OwnerReferences,
		ManagedFields: o.ManagedFields(),
	}
	if len(o.Annotations) > 0 {
		m.Annotations = make(map[string]string, len(o.Annotations))
		for _, a := range o.Annotations {
			m.Annotations[a.Key] = a.Value
		}
	}
	if o.Deleting {
		m.DeletionTimestamp = &metav1.Time{}
	}
	return m
}

// Compact is the informers' transform: it turns the PartialObjectMetadata
// the API server sent into an Object. Strings that many objects repeat —
// namespaces, annotation keys, managers, API versions — are interned;
// objects with equal labels share one labels map, and objects whose
// managedFields are equal but for their timestamps (every object of one
// shape that one manager applied) share one list. A cached object then
// costs little more than its name, UID, resource version and annotations.
// Other annotations go: a last-applied-configuration annotation alone can
// be larger than everything else together. Objects of other types pass
// through unchanged.
func (t *tables) Compact(obj any) (any, error) {
	switch o := obj.(type) {
	case *metav1.PartialObjectMetadata:
		return t.compact(&o.ObjectMeta), nil
	case *unstructured.Unstructured:
		// A kind watched with its status: the verdict is computed here,
		// and only the verdict is kept.
		c := t.compact(o)
		res, err := kstatus.Compute(o)
		if err != nil {
			c.Readiness = &Readiness{Status: string(kstatus.UnknownStatus), Message: err.Error()}
		} else {
			c.Readiness = &Readiness{Status: intern(string(res.Status)), Message: res.Message}
		}
		switch o.GetKind() {
		case "Pod":
			c.Pod = podState(o)
		case "HorizontalPodAutoscaler":
			c.ScaleTarget = scaleTarget(o)
		}
		return c, nil
	default:
		return obj, nil
	}
}

func (t *tables) compact(m metav1.Object) *Object {
	o := &Object{
		Namespace:       intern(m.GetNamespace()),
		Name:            m.GetName(),
		UID:             m.GetUID(),
		ResourceVersion: m.GetResourceVersion(),
		Generation:      m.GetGeneration(),
		Deleting:        m.GetDeletionTimestamp() != nil,
		labels:          t.labels(m.GetLabels()),
		OwnerReferences: m.GetOwnerReferences(),
		managedFields:   t.managedFields(m.GetManagedFields()),
	}
	ann := m.GetAnnotations()
	n := 0
	for k := range ann {
		if strings.HasPrefix(k, KeepAnnotationPrefix) {
			n++
		}
	}
	if n > 0 {
		o.Annotations = make([]Annotation, 0, n)
		for k, v := range ann {
			if strings.HasPrefix(k, KeepAnnotationPrefix) {
				if k == internedValueAnnotation {
					v = intern(v)
				}
				o.Annotations = append(o.Annotations, Annotation{Key: intern(k), Value: v})
			}
		}
	}
	return o
}

// internedValueAnnotation is a kept annotation whose value every object of
// a Bundle repeats (ownership.BundleAnnotation).
const internedValueAnnotation = "driftwatch.io/bundle"

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// tables intern what many cached objects repeat.
type tables struct {
	labelSets *weakTable[labelSet]
	fieldSets *weakTable[fieldsList]
}

func newTables() *tables {
	return &tables{labelSets: newWeakTable[labelSet](), fieldSets: newWeakTable[fieldsList]()}
}

// labelSet is one distinct set of labels.
type labelSet struct{ m map[string]string }

// fieldsList is one distinct managedFields list, without timestamps.
type fieldsList struct{ entries []metav1.ManagedFieldsEntry }

func (t *tables) labels(m map[string]string) *labelSet {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var key []byte
	for _, k := range keys {
		key = appendField(appendField(key, k), m[k])
	}
	return t.labelSets.intern(string(key), func() *labelSet {
		ls := &labelSet{m: make(map[string]string, len(m))}
		for k, v := range m {
			ls.m[intern(k)] = intern(v)
		}
		return ls
	})
}

func (t *tables) managedFields(entries []metav1.ManagedFieldsEntry) *fieldsList {
	if len(entries) == 0 {
		return nil
	}
	var key []byte
	for _, e := range entries {
		key = appendField(key, e.Manager)
		key = appendField(key, string(e.Operation))
		key = appendField(key, e.APIVersion)
		key = appendField(key, e.FieldsType)
		key = appendField(key, e.Subresource)
		raw := ""
		if e.FieldsV1 != nil {
			raw = e.FieldsV1.String()
		}
		key = appendField(key, raw)
	}
	return t.fieldSets.intern(string(key), func() *fieldsList {
		fl := &fieldsList{entries: entries}
		for i := range fl.entries {
			e := &fl.entries[i]
			e.Manager = intern(e.Manager)
			e.Operation = metav1.ManagedFieldsOperationType(intern(string(e.Operation)))
			e.APIVersion = intern(e.APIVersion)
			e.FieldsType = intern(e.FieldsType)
			e.Subresource = intern(e.Subresource)
			e.Time = nil // when a manager last wrote is not used
		}
		return fl
	})
}

// appendField appends s to a table key, prefixed with its length so that
// keys are unambiguous.
func appendField(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	return append(append(b, ':'), s...)
}

// weakTable interns values by a key. It holds them weakly: a value that
// nothing else references any more is collected and its entry removed, so
// the table holds only what the cache uses.
type weakTable[T any] struct {
	mu      sync.Mutex
	entries map[string]weak.Pointer[T]
}

func newWeakTable[T any]() *weakTable[T] {
	return &weakTable[T]{entries: map[string]weak.Pointer[T]{}}
}

// intern returns the value held for key, or the one build makes.
func (t *weakTable[T]) intern(key string, build func() *T) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.entries[key]; ok {
		if v := wp.Value(); v != nil {
			return v
		}
	}
	v := build()
	wp := weak.Make(v)
	t.entries[key] = wp
	goruntime.AddCleanup(v, t.forget, weakEntry[T]{key: key, wp: wp})
	return v
}

type weakEntry[T any] struct {
	key string
	wp  weak.Pointer[T]
}

// forget removes a collected value's entry, unless a new value took its key.
func (t *weakTable[T]) forget(e weakEntry[T]) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.entries[e.key] == e.wp {
		delete(t.entries, e.key)
	}
}

// len returns the number of entries.
func (t *weakTable[T]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// scaleTarget reads an autoscaler's spec.scaleTargetRef; nil without one.
func scaleTarget(u *unstructured.Unstructured) *ScaleTarget {
	ref, ok, _ := unstructured.NestedStringMap(u.Object, "spec", "scaleTargetRef")
	if !ok || ref["kind"] == "" || ref["name"] == "" {
		return nil
	}
	return &ScaleTarget{APIVersion: ref["apiVersion"], Kind: ref["kind"], Name: ref["name"]}
}
