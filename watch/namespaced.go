package watch

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Namespaced is one resource's full-object informers over the namespaces
// the agent watches (its Bundles and BundleRestrictions in the source
// cluster): one per namespace, or a single one for all of them
// (metav1.NamespaceAll), so that the agent needs no cluster-wide rights
// unless it is told to watch every namespace.
type Namespaced struct {
	byNamespace map[string]cache.SharedIndexInformer
}

// NewNamespaced returns the informers of gvr over namespaces, not started.
func NewNamespaced(client dynamic.Interface, gvr schema.GroupVersionResource, namespaces []string) *Namespaced {
	s := &Namespaced{byNamespace: map[string]cache.SharedIndexInformer{}}
	for _, ns := range namespaces {
		s.byNamespace[ns] = dynamicinformer.NewFilteredDynamicInformer(client, gvr, ns, 0,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
	}
	return s
}

// Informers returns every informer of the set, to add handlers to before
// Run.
func (s *Namespaced) Informers() []cache.SharedIndexInformer {
	out := make([]cache.SharedIndexInformer, 0, len(s.byNamespace))
	for _, inf := range s.byNamespace {
		out = append(out, inf)
	}
	return out
}

// forNamespace is the informer that holds namespace ns, nil if none does.
func (s *Namespaced) forNamespace(ns string) cache.SharedIndexInformer {
	if inf, ok := s.byNamespace[ns]; ok {
		return inf
	}
	return s.byNamespace[metav1.NamespaceAll]
}

// Get returns the cached object key, nil if none.
func (s *Namespaced) Get(key types.NamespacedName) any {
	inf := s.forNamespace(key.Namespace)
	if inf == nil {
		return nil
	}
	obj, exists, err := inf.GetStore().GetByKey(key.String())
	if err != nil || !exists {
		return nil // the store's GetByKey never fails for a string key
	}
	return obj
}

// List returns every cached object.
func (s *Namespaced) List() []any {
	var out []any
	for _, inf := range s.byNamespace {
		out = append(out, inf.GetStore().List()...)
	}
	return out
}

// InNamespace returns the cached objects of namespace ns.
func (s *Namespaced) InNamespace(ns string) []any {
	inf := s.forNamespace(ns)
	if inf == nil {
		return nil
	}
	objs, err := inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return nil // the index is registered at construction
	}
	return objs
}

// HasSynced reports whether every informer has synced.
func (s *Namespaced) HasSynced() bool {
	for _, inf := range s.byNamespace {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// Run runs every informer until ctx ends, and returns when they stopped.
func (s *Namespaced) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, inf := range s.byNamespace {
		wg.Go(func() {
			defer utilruntime.HandleCrashWithContext(ctx)
			inf.RunWithContext(ctx)
		})
	}
	wg.Wait()
}
