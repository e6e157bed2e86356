package apply

import (
	"context"
	"errors"
	"fmt"
	"github.com/driftwatch/driftwatch/manifests"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
)

// Options configure an Applier.
type Options struct {
	// FieldManager is the server-side apply field manager.
	FieldManager string
	// Concurrency bounds the applies in flight: shared by every sync, so
	// that one large Bundle can use them all.
	Concurrency int
}

// Applier applies desired objects with server-side apply.
type Applier struct {
	client   dynamic.Interface
	metadata metadata.Interface
	mapper   meta.ResettableRESTMapper
	opts     Options
	// mappings caches the mapper's answers per GVK: the discovery mapper
	// allocates (NoMatch errors included) on every call, and a sync of
	// thousands of objects of a few kinds asked it once per object.
	mappings *sync.Map // schema.GroupVersionKind → *meta.RESTMapping
	// slots bound the applies in flight across every ApplyAll.
	slots chan struct{}
}

// New returns an Applier writing through client, listing metadata through
// meta (nil: ListMetadata is unavailable) and resolving kinds through
// mapper (reset after CRDs are applied).
func New(client dynamic.Interface, meta metadata.Interface, mapper meta.ResettableRESTMapper, opts Options) *Applier {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	return &Applier{client: client, metadata: meta, mapper: mapper, opts: opts,
		mappings: &sync.Map{}, slots: make(chan struct{}, opts.Concurrency)}
}

// As returns an Applier that reads and writes through other clients (a
// ServiceAccount's, impersonated), sharing this one's kind mappings and its
// bound on applies in flight.
func (a *Applier) As(client dynamic.Interface, meta metadata.Interface) *Applier {
	b := *a
	b.client, b.metadata = client, meta
	return &b
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

// FieldManager returns the field manager the Applier applies as.
func (a *Applier) FieldManager() string { return a.opts.FieldManager }

// ErrUnknownKind is a kind the target cluster does not serve (yet: a CRD
// of the same Bundle may bring it).
var ErrUnknownKind = errors.New("unknown kind")

// Resolve finds the resource of obj and settles its namespace: targetNS
// forces every namespaced object there (and refuses cluster-scoped ones),
// defaultNS fills in a namespace that the object does not name.

func (a *Applier) Resolve(obj *unstructured.Unstructured, defaultNS, targetNS string) (schema.GroupVersionResource, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapping(gvk)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return schema.GroupVersionResource{}, fmt.Errorf("%w %s: no such resource in the target cluster", ErrUnknownKind, gvk)
		}
		return schema.GroupVersionResource{}, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		obj.SetNamespace(Target{DefaultNamespace: defaultNS, TargetNamespace: targetNS}.NamespaceOf(obj.GetNamespace()))
	} else {
		if targetNS != "" {
			return schema.GroupVersionResource{}, fmt.Errorf("%s is cluster-scoped, but the bundle sets targetNamespace %q", gvk.Kind, targetNS)
		}
		obj.SetNamespace("")
	}
	return m.Resource, nil
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

// GetMetadata returns the metadata of the object ref of gvr, nil if it
// does not exist.
func (a *Applier) GetMetadata(ctx context.Context, gvr schema.GroupVersionResource, ref manifests.ObjectRef) (*metav1.PartialObjectMetadata, error) {
	if a.metadata == nil {
		return nil, fmt.Errorf("no metadata client")
	}
	obj, err := a.metadata.Resource(gvr).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return obj, nil
}
