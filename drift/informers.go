package drift

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

// informerSet is one resource's informers over the namespaces the agent
// watches: one per namespace, or a single one for all of them
// (metav1.NamespaceAll), so that the agent needs no cluster-wide rights
// unless it is told to watch every namespace.
type informerSet struct {
	byNamespace map[string]cache.SharedIndexInformer
}

func newInformerSet(client dynamic.Interface, gvr schema.GroupVersionResource, namespaces []string) *informerSet {
	s := &informerSet{byNamespace: map[string]cache.SharedIndexInformer{}}
	for _, ns := range namespaces {
		s.byNamespace[ns] = dynamicinformer.NewFilteredDynamicInformer(client, gvr, ns, 0,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
	}
	return s
}

// each calls f with every informer.
func (s *informerSet) each(f func(cache.SharedIndexInformer)) {
	for _, inf := range s.byNamespace {
		f(inf)
	}
}

// forNamespace is the informer that holds namespace ns, nil if none does.
func (s *informerSet) forNamespace(ns string) cache.SharedIndexInformer {
	if inf, ok := s.byNamespace[ns]; ok {
		return inf
	}
	return s.byNamespace[metav1.NamespaceAll]
}

// get returns the cached object key, nil if none.
func (s *informerSet) get(key types.NamespacedName) any {
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

// list returns every cached object.
func (s *informerSet) list() []any {
	var out []any
	s.each(func(inf cache.SharedIndexInformer) { out = append(out, inf.GetStore().List()...) })
	return out
}

// inNamespace returns the cached objects of namespace ns.
func (s *informerSet) inNamespace(ns string) []any {
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

// hasSynced reports whether every informer has synced.
func (s *informerSet) hasSynced() bool {
	for _, inf := range s.byNamespace {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// run runs every informer until ctx ends, and returns when they stopped.
func (s *informerSet) run(ctx context.Context) {
	var wg sync.WaitGroup
	s.each(func(inf cache.SharedIndexInformer) {
		wg.Go(func() {
			defer utilruntime.HandleCrashWithContext(ctx)
			inf.RunWithContext(ctx)
		})
	})
	wg.Wait()
}
