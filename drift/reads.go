package drift

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/driftwatch/driftwatch/manifests"
)

// reads follows the objects of the target cluster that renders read
// (spec.helm.valuesFrom): one metadata-only watch per object, selected by
// name, shared by the Bundles that read it. A change of one (its
// resourceVersion) syncs those Bundles; their render reads it again and
// makes a new release revision only if the values changed.
type reads struct {
	mu      sync.Mutex
	ctx     context.Context // the controller's run; nil before Run
	wg      sync.WaitGroup
	watches map[manifests.Reference]*readWatch
}

type readWatch struct {
	cancel  context.CancelFunc
	bundles map[types.NamespacedName]bool
}

var readResources = map[string]schema.GroupVersionResource{
	"ConfigMap": {Version: "v1", Resource: "configmaps"},
	"Secret":    {Version: "v1", Resource: "secrets"},
}

// watchReads makes the watches of key those of refs: it starts the
// missing ones and stops those no Bundle reads any more.
func (c *Controller) watchReads(key types.NamespacedName, refs []manifests.Reference) {
	r := &c.reads
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[manifests.Reference]bool{}
	for _, ref := range refs {
		if _, ok := readResources[ref.Kind]; ok {
			want[ref] = true
		}
	}
	for ref, w := range r.watches {
		if w.bundles[key] && !want[ref] {
			delete(w.bundles, key)
			if len(w.bundles) == 0 {
				w.cancel()
				delete(r.watches, ref)
			}
		}
	}
	if r.ctx == nil || c.opts.TargetMetadata == nil {
		return
	}
	for ref := range want {
		w := r.watches[ref]
		if w == nil {
			w = &readWatch{bundles: map[types.NamespacedName]bool{}}
			ctx, cancel := context.WithCancel(r.ctx)
			w.cancel = cancel
			r.watches[ref] = w
			r.wg.Go(func() { c.runReadWatch(ctx, ref) })
		}
		w.bundles[key] = true
	}
}

// runReadWatch runs the watch of one object until ctx ends. Its initial
// list is no change: the Bundles that read it were just rendered.
func (c *Controller) runReadWatch(ctx context.Context, ref manifests.Reference) {
	inf := c.namedInformer(readResources[ref.Kind], ref.Namespace, ref.Name)
	changed := func() {
		c.reads.mu.Lock()
		var keys []types.NamespacedName
		if w := c.reads.watches[ref]; w != nil {
			for k := range w.bundles {
				keys = append(keys, k)
			}
		}
		c.reads.mu.Unlock()
		for _, k := range keys {
			c.queue.Add(k)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(_ any, initial bool) {
			if !initial {
				changed()
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(metav1.Object)
			n, ok2 := obj.(metav1.Object)
			if !ok1 || !ok2 || o.GetResourceVersion() != n.GetResourceVersion() {
				changed()
			}
		},
		DeleteFunc: func(any) { changed() },
	})
	inf.RunWithContext(ctx)
}

// startReads lets watchReads start watches, under the controller's run.
func (c *Controller) startReads(ctx context.Context) {
	c.reads.mu.Lock()
	c.reads.ctx = ctx
	if c.reads.watches == nil {
		c.reads.watches = map[manifests.Reference]*readWatch{}
	}
	c.reads.mu.Unlock()
}

// stopReads stops every watch and waits for them.
func (c *Controller) stopReads() {
	c.reads.mu.Lock()
	for ref, w := range c.reads.watches {
		w.cancel()
		delete(c.reads.watches, ref)
	}
	c.reads.ctx = nil
	c.reads.mu.Unlock()
	c.reads.wg.Wait()
}

// namedInformer is a metadata-only informer of one object of the target
// cluster, selected by name: the valuesFrom watches and the cluster
// ConfigMap's.
func (c *Controller) namedInformer(gvr schema.GroupVersionResource, namespace, name string) cache.SharedIndexInformer {
	return metadatainformer.NewFilteredMetadataInformer(c.opts.TargetMetadata, gvr, namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}).Informer()
}
