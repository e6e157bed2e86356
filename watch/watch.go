package watch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// KeepAnnotationPrefix marks the annotations that the cache keeps.
const KeepAnnotationPrefix = "driftwatch.io/"

// Handler receives the events of every informer. Calls for one resource
// type come from one goroutine; calls for different types are concurrent.
// Objects are shared with the cache and must not be modified.
type Handler interface {
	// OnUpsert is called for an object added or updated.
	OnUpsert(gvr schema.GroupVersionResource, obj *Object)
	// OnDelete is called for a deleted object (also when the deletion was
	// only inferred after a re-list).
	OnDelete(gvr schema.GroupVersionResource, obj *Object)
	// OnPod is called for a Pod added or updated in a namespace watched
	// with EnsurePods; obj.Pod holds its container states.
	OnPod(obj *Object)
	// OnPodDeleted is called for such a Pod deleted (also when the
	// deletion was only inferred after a re-list): a crashed Pod that its
	// controller deleted crashes no longer.
	OnPodDeleted(obj *Object)
	// OnAutoscaler is called for a HorizontalPodAutoscaler added, updated
	// or (gone set) deleted, once EnsurePods watches any namespace;
	// obj.ScaleTarget says what it scales.
	OnAutoscaler(obj *Object, gone bool)
}

// AutoscalersGVR is the resource of HorizontalPodAutoscalers.
var AutoscalersGVR = schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}

// Options configure a Manager.
type Options struct {
	// LabelSelector selects owned objects, e.g. "driftwatch.io/bundle".
	LabelSelector string
	// SyncTimeout bounds the wait for a new informer's first list.
	SyncTimeout time.Duration
	// NeedsStatus reports whether readiness of a resource type needs the
	// objects' status. Those types are watched whole, and the transform
	// keeps only the kstatus verdict; the others are watched metadata-only.
	// Nil means none.
	NeedsStatus func(schema.GroupVersionResource) bool
}

// PodsGVR is the resource of Pods.
var PodsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// NeedsStatus is the default Options.NeedsStatus: workloads, Jobs, Pods,
// PersistentVolumeClaims, Services (a LoadBalancer waits for its address),
// PodDisruptionBudgets, and custom resources, whose conditions kstatus
// reads. Everything else — ConfigMaps, Secrets, RBAC, … — is ready when it
// exists, so its metadata is enough.
func NeedsStatus(gvr schema.GroupVersionResource) bool {
	switch gvr.Group {
	case "apps":
		return gvr.Resource == "deployments" || gvr.Resource == "statefulsets" ||
			gvr.Resource == "daemonsets" || gvr.Resource == "replicasets"
	case "batch":
		return gvr.Resource == "jobs"
	case "policy":
		return gvr.Resource == "poddisruptionbudgets"
	case "":
		return gvr.Resource == "pods" || gvr.Resource == "persistentvolumeclaims" || gvr.Resource == "services"
	}
	// Custom resources: their groups have a dot and are not Kubernetes' own.
	return strings.Contains(gvr.Group, ".") && !strings.HasSuffix(gvr.Group, ".k8s.io")
}

// Manager runs one metadata-only informer per resource type, each with its
// own stop channel so that one type can stop alone (the stock factory can
// only stop all of them).
type Manager struct {
	client  metadata.Interface
	dynamic dynamic.Interface
	handler Handler
	opts    Options

	tables    *tables
	mu        sync.Mutex
	informers map[schema.GroupVersionResource]*informer
	pods      map[string]*informer // namespace → its Pods, for crash detection
	scalers   *informer            // the cluster's HorizontalPodAutoscalers
	wg        sync.WaitGroup
	ctx       context.Context
}

type informer struct {
	inf    cache.SharedIndexInformer
	cancel context.CancelFunc
	// refused holds the error of a list or watch that the API server
	// refused (401, 403): the agent may not watch this resource type.
	refused atomic.Pointer[error]
}

// New returns a Manager, not started: Start hands it its context and its
// handler; informers then start on Ensure and EnsurePods and stop with
// that context, Stop, StopPods or Shutdown.
func New(client metadata.Interface, dyn dynamic.Interface, opts Options) *Manager {
	if opts.SyncTimeout == 0 {
		opts.SyncTimeout = time.Minute
	}
	if opts.NeedsStatus == nil {
		opts.NeedsStatus = func(schema.GroupVersionResource) bool { return false }
	}
	return &Manager{client: client, dynamic: dyn, opts: opts, ctx: context.Background(),
		tables: newTables(), informers: map[schema.GroupVersionResource]*informer{},
		pods: map[string]*informer{}}
}

// Start makes ctx the context every informer runs under (the owner's Run)
// and handler the receiver of their events. It is called once, before
// the first Ensure.
func (m *Manager) Start(ctx context.Context, handler Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx, m.handler = ctx, handler
}

// Ensure starts the informer for gvr unless it runs, and waits for its
// first list to be in the cache.
func (m *Manager) Ensure(ctx context.Context, gvr schema.GroupVersionResource) error {
	m.mu.Lock()
	inf, ok := m.informers[gvr]
	if !ok {
		inf = m.start(gvr)
		m.informers[gvr] = inf
	}
	m.mu.Unlock()
	if inf.inf.HasSynced() {
		return nil
	}
	var refused error
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, m.opts.SyncTimeout, true, func(context.Context) (bool, error) {
		if p := inf.refused.Load(); p != nil {
			refused = *p
			return false, refused
		}
		return inf.inf.HasSynced(), nil
	})
	switch {
	case refused != nil:
		// It would retry for ever; the next sync asks again.
		m.stopInformer(gvr, inf)
		return fmt.Errorf("cannot watch %s: %w", gvr.GroupResource(), refused)
	case err != nil:
		return fmt.Errorf("informer for %s did not sync: %w", gvr, err)
	}
	return nil
}

// stopInformer stops inf if it is still gvr's informer.
func (m *Manager) stopInformer(gvr schema.GroupVersionResource, inf *informer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.informers[gvr] == inf {
		inf.cancel()
		delete(m.informers, gvr)
	}
}

func (m *Manager) start(gvr schema.GroupVersionResource) *informer {
	selector := func(o *metav1.ListOptions) { o.LabelSelector = m.opts.LabelSelector }
	// No indexers: lookups are by key, and an index costs memory per object.
	var inf cache.SharedIndexInformer
	if m.opts.NeedsStatus(gvr) {
		inf = dynamicinformer.NewFilteredDynamicInformer(m.dynamic, gvr, metav1.NamespaceAll, 0, nil, selector).Informer()
	} else {
		inf = metadatainformer.NewFilteredMetadataInformer(m.client, gvr, metav1.NamespaceAll, 0, nil, selector).Informer()
	}
	i := m.run(inf, cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(*Object); ok {
				m.handler.OnUpsert(gvr, o)
			}
		},
		UpdateFunc: func(_, obj any) {
			if o, ok := obj.(*Object); ok {
				m.handler.OnUpsert(gvr, o)
			}
		},
		DeleteFunc: func(obj any) {
			if o, ok := deleted(obj); ok {
				m.handler.OnDelete(gvr, o)
			}
		},
	})
	return i
}

// deleted is the object of a delete event, also when the deletion was
// only inferred after a re-list (a tombstone).
func deleted(obj any) (*Object, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, ok := obj.(*Object)
	return o, ok
}

// run starts inf with the compacting transform and handler, owned by the
// Manager: it stops with the Manager's context or the returned cancel.
func (m *Manager) run(inf cache.SharedIndexInformer, handler cache.ResourceEventHandler) *informer {
	ctx, cancel := context.WithCancel(m.ctx)
	i := &informer{inf: inf, cancel: cancel}
	_ = inf.SetTransform(m.tables.Compact) // fails only once the informer runs; it has not started
	_, _ = inf.AddEventHandler(handler)    // fails only on a stopped informer; this one has not started
	// Errors only once the informer runs; it has not started.
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			i.refused.Store(&err)
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		inf.RunWithContext(ctx)
	}()
	return i
}

// EnsurePods starts watching every Pod of namespace, for crash detection
// of the Pods behind owned workloads (they carry no ownership label),
// unless that runs already; and, with the first namespace, every
// HorizontalPodAutoscaler of the cluster (one informer: they are few, and
// say which owned workloads' replicas they take). Events go to
// Handler.OnPod, OnPodDeleted and OnAutoscaler. It does not wait for the
// first list: a crash or an autoscaler seen a moment later is still seen.
func (m *Manager) EnsurePods(namespace string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.scalers == nil {
		m.scalers = m.runScalers()
	}
	if _, ok := m.pods[namespace]; ok {
		return
	}
	inf := dynamicinformer.NewFilteredDynamicInformer(m.dynamic, PodsGVR, namespace, 0, nil, nil).Informer()
	onPod := func(obj any) {
		if o, ok := obj.(*Object); ok && o.Pod != nil {
			m.handler.OnPod(o)
		}
	}
	m.pods[namespace] = m.run(inf, cache.ResourceEventHandlerFuncs{
		AddFunc:    onPod,
		UpdateFunc: func(_, obj any) { onPod(obj) },
		DeleteFunc: func(obj any) {
			if o, ok := deleted(obj); ok {
				m.handler.OnPodDeleted(o)
			}
		},
	})
}

// runScalers starts the autoscaler informer. The caller holds m.mu.
func (m *Manager) runScalers() *informer {
	inf := dynamicinformer.NewFilteredDynamicInformer(m.dynamic, AutoscalersGVR, metav1.NamespaceAll, 0, nil, nil).Informer()
	on := func(obj any) {
		if o, ok := obj.(*Object); ok {
			m.handler.OnAutoscaler(o, false)
		}
	}
	return m.run(inf, cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
		DeleteFunc: func(obj any) {
			if o, ok := deleted(obj); ok {
				m.handler.OnAutoscaler(o, true)
			}
		},
	})
}

// StopPods stops watching the Pods of namespaces not in keep, and the
// autoscalers once keep is empty.
func (m *Manager) StopPods(keep map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ns, inf := range m.pods {
		if !keep[ns] {
			inf.cancel()
			delete(m.pods, ns)
		}
	}
	if len(keep) == 0 && m.scalers != nil {
		m.scalers.cancel()
		m.scalers = nil
	}
}

// Stop stops the informer for gvr, if it runs.
func (m *Manager) Stop(gvr schema.GroupVersionResource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inf, ok := m.informers[gvr]; ok {
		inf.cancel()
		delete(m.informers, gvr)
	}
}

// Running returns the resource types with an informer.
func (m *Manager) Running() []schema.GroupVersionResource {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]schema.GroupVersionResource, 0, len(m.informers))
	for gvr := range m.informers {
		out = append(out, gvr)
	}
	return out
}

// Get returns the cached object, if any.
func (m *Manager) Get(gvr schema.GroupVersionResource, namespace, name string) (*Object, bool) {
	m.mu.Lock()
	inf, ok := m.informers[gvr]
	m.mu.Unlock()
	if !ok {
		return nil, false
	}
	key := name
	if namespace != "" {
		key = namespace + "/" + name
	}
	obj, exists, err := inf.inf.GetStore().GetByKey(key)
	if err != nil || !exists {
		return nil, false
	}
	o, ok := obj.(*Object)
	return o, ok
}

// Count returns the number of cached objects of gvr.
func (m *Manager) Count(gvr schema.GroupVersionResource) int {
	m.mu.Lock()
	inf, ok := m.informers[gvr]
	m.mu.Unlock()
	if !ok {
		return 0
	}
	return len(inf.inf.GetStore().ListKeys())
}

// Shutdown stops every informer and waits until their goroutines have
// ended.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	for gvr, inf := range m.informers {
		inf.cancel()
		delete(m.informers, gvr)
	}
	for ns, inf := range m.pods {
		inf.cancel()
		delete(m.pods, ns)
	}
	if m.scalers != nil {
		m.scalers.cancel()
		m.scalers = nil
	}
	m.mu.Unlock()
	m.wg.Wait()
}
