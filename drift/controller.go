package drift

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/drift/events"
	"github.com/driftwatch/driftwatch/drift/scaling"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/tenancy"
	"github.com/driftwatch/driftwatch/watch"
)

// Finalizer keeps a Bundle until its owned objects are cleaned up.
const Finalizer = "driftwatch.io/cleanup"

// Options configure a Controller.
type Options struct {
	// Namespace is the agent's own namespace, where Bundles are watched
	// in the source cluster (besides BundleNamespaces).
	Namespace string
	// BundleNamespaces are further namespaces whose Bundles are watched;
	// metav1.NamespaceAll among them watches every namespace.
	BundleNamespaces []string
	// ParentNamespace is where ApplySet parents live in the target cluster.
	ParentNamespace string
	// Workers is the number of bundle sync workers.
	Workers int
	// FixWorkers is the number of correction workers; 0 means 8 per
	// bundle worker. A correction is one apply that waits on the API
	// server, so a burst of drift is corrected as fast as the server
	// accepts applies only with many in flight.
	FixWorkers int
	// ResyncPeriod is the safety-net check of every owned object against
	// the cache (no API calls).
	ResyncPeriod time.Duration
	// FightWindow and FightThreshold: the same field taken by the same
	// manager FightThreshold times within FightWindow is a fight.
	FightWindow    time.Duration
	FightThreshold int
	// FightBackoff is the first pause of corrections in a fight; it
	// doubles with every further take, up to FightMaxBackoff.
	FightBackoff    time.Duration
	FightMaxBackoff time.Duration
	// ReleaseMemoryAfter: once the bundle and correction queues are idle
	// after syncs and corrections that declared or corrected at least this
	// many objects, the heap they used is returned to the operating system
	// at once (0: never; the runtime then gives it back over minutes). A
	// full sync decodes every document of a Bundle, a transient peak
	// several times the agent's steady-state heap; a burst of corrections
	// leaves its request and response bodies.
	ReleaseMemoryAfter int
	// QueueMetrics publishes the work queues' metrics; nil: none.
	QueueMetrics workqueue.MetricsProvider
	// Pipeline renders Bundles; Cluster is what they are rendered for.
	Pipeline manifests.Pipeline
	Cluster  manifests.Cluster
	// TargetMetadata watches the objects that renders read (valuesFrom);
	// nil: they are read at each render but not watched.
	TargetMetadata metadata.Interface
	// Tenancy settles which ServiceAccount each Bundle acts as and what
	// its namespace's BundleRestrictions allow; the controller lists the
	// restrictions from the source cluster. ActAs returns the target
	// cluster's clients impersonating an account (nil: Bundles that act as
	// one fail to sync, saying so).
	Tenancy tenancy.Policy
	ActAs   func(serviceAccount types.NamespacedName) (*clusters.Clients, error)
	// TargetEvents writes the events about owned objects (drift,
	// corrections, fights, crashes, prunes) in the target cluster,
	// regarding each object; nil records them on the Bundle.
	TargetEvents eventsclient.EventsV1Interface
}

// DefaultOptions returns the options the agent runs with.
func DefaultOptions() Options {
	return Options{
		Namespace: "driftwatch-system", ParentNamespace: "driftwatch-system",
		Workers: 4, ResyncPeriod: 10 * time.Minute,
		FightWindow: time.Minute, FightThreshold: 3,
		FightBackoff: 5 * time.Second, FightMaxBackoff: 5 * time.Minute,
		ReleaseMemoryAfter: 1000,
	}
}

// SourceProvider hands out the source cluster's clients, and a channel
// that is closed when they are replaced; Answering's channel is closed
// when the source answers again after it did not (clusters.Provider).
type SourceProvider interface {
	Source() (*clusters.Clients, <-chan struct{})
	Answering() <-chan struct{}
}

// Controller keeps target-cluster objects equal to what the Bundles in the
// source cluster declare, and repairs drift as soon as an informer shows it.
//
// Lock order: Controller.mu before watch.Manager's lock. The controller
// calls the watch manager (Get, Ensure, Stop) while holding mu; the watch
// manager calls the controller's handlers (OnUpsert, OnDelete, OnPod, OnPodDeleted)
// without holding its own. No API call is made while mu is held.
type Controller struct {
	sources  SourceProvider
	applier  *apply.Applier
	watches  Watches
	metrics  *metrics.Metrics
	pipeline manifests.Pipeline
	opts     Options
	// policy admits Bundles (pipeline.Admit); its restrictions are the
	// source cluster's, read through the controller.
	policy tenancy.Policy

	// src is the connection to the source cluster: the Bundle informer
	// and the status and event writers. Replaced, whole, when the source
	// cluster's clients change (superviseSource).
	src atomic.Pointer[source]

	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	fixes    workqueue.TypedRateLimitingInterface[fixKey]
	statuses workqueue.TypedRateLimitingInterface[types.NamespacedName]
	// crashQueue holds crashing Pods whose owner is looked up off the
	// informer's goroutine (it may take an API read).
	crashQueue workqueue.TypedRateLimitingInterface[types.NamespacedName]
	// helmRetry is the back-off of a Helm Bundle whose render failed,
	// per Bundle: from helmRetryMin, doubling, to helmRetryMax.
	helmRetry workqueue.TypedRateLimiter[types.NamespacedName]

	logger klog.Logger // set by Run, before any informer starts
	synced atomic.Bool // the Bundle cache has synced and workers run

	// syncing and fixing count the syncs and corrections in progress;
	// churn counts the objects they declared or corrected since memory
	// was last released.
	syncing atomic.Int32
	fixing  atomic.Int32
	churn   atomic.Int64

	// mu guards the indexes below up to crashing, and clusterNow; each
	// bundleState has its own lock (state.go), reads and objEvents theirs.
	mu      sync.Mutex
	states  map[types.NamespacedName]*bundleState
	byLabel map[string]types.NamespacedName // BundleLabel value → Bundle
	// kinds maps the resource types of declared objects to their kinds,
	// so that an informer event finds its object's reference.
	kinds map[schema.GroupVersionResource]string
	// holding counts, per resource type, the syncs in progress that watch
	// it before their state records it: stopUnusedWatches keeps those.
	holding map[schema.GroupVersionResource]int
	// rsOwners maps ReplicaSets to their Deployment ("" for none), for
	// crashing Pods; crashRuns holds, per Pod, the failed runs counted;
	// crashing holds the latest state of the Pods in crashQueue.
	rsOwners  map[types.NamespacedName]string
	crashRuns map[types.UID]map[string]bool
	crashing  map[types.NamespacedName]*watch.Object

	// reads are the watches of objects that renders read; their own lock.
	reads reads
	// objEvents writes events about owned objects; nil: on the Bundle.
	objEvents *events.Recorder
	// clusterNow is the cluster Bundles are rendered for (cluster.go).
	clusterNow manifests.Cluster
	// scalers are the autoscalers of owned objects (autoscalers.go).
	scalers *scaling.Autoscalers
	// guardsAtStart are the admission policies found at the first sync
	// (existingGuards), read-only once listed.
	guardsOnce    sync.Once
	guardsAtStart map[string]bool
	// owner is the owner of the admission policies (guardOwner), read
	// once.
	ownerMu sync.Mutex
	owner   *metav1.OwnerReference
}

// Watches are the informers of owned objects (watch.Manager): Run starts
// them under its context with the controller as their handler, and shuts
// them down when it returns.
type Watches interface {
	Start(ctx context.Context, handler watch.Handler)
	Ensure(ctx context.Context, gvr schema.GroupVersionResource) error
	Get(gvr schema.GroupVersionResource, namespace, name string) (*watch.Object, bool)
	Stop(gvr schema.GroupVersionResource)
	Running() []schema.GroupVersionResource
	Count(gvr schema.GroupVersionResource) int
	EnsurePods(namespace string)
	StopPods(keep map[string]bool)
	Shutdown()
}

// New wires a Controller: Bundles come from the source cluster that
// sources hands out, objects are applied by applier and watched by
// watches.
func New(sources SourceProvider, applier *apply.Applier, watches Watches, m *metrics.Metrics, opts Options) *Controller {
	c := &Controller{
		sources: sources, applier: applier, watches: watches, metrics: m, opts: opts, pipeline: opts.Pipeline,
		states:     map[types.NamespacedName]*bundleState{},
		byLabel:    map[string]types.NamespacedName{},
		kinds:      map[schema.GroupVersionResource]string{},
		holding:    map[schema.GroupVersionResource]int{},
		rsOwners:   map[types.NamespacedName]string{},
		crashRuns:  map[types.UID]map[string]bool{},
		crashing:   map[types.NamespacedName]*watch.Object{},
		queue:      newQueue[types.NamespacedName]("bundles", opts.QueueMetrics),
		fixes:      newQueue[fixKey]("corrections", opts.QueueMetrics),
		statuses:   newQueue[types.NamespacedName]("status", opts.QueueMetrics),
		crashQueue: newQueue[types.NamespacedName]("pod_crashes", opts.QueueMetrics),
		helmRetry:  workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](helmRetryMin, helmRetryMax),
		scalers:    scaling.NewAutoscalers(),
	}
	c.policy = opts.Tenancy
	c.policy.AgentNamespace = opts.Namespace
	c.policy.Restrictions = c
	c.pipeline.Admit = &c.policy
	if opts.TargetEvents != nil {
		c.objEvents = events.New(opts.TargetEvents, applier.FieldManager())
	}
	m.WatchedObjects.Source(c)
	return c
}

func newQueue[K comparable](name string, mp workqueue.MetricsProvider) workqueue.TypedRateLimitingInterface[K] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[K](),
		workqueue.TypedRateLimitingQueueConfig[K]{Name: name, MetricsProvider: mp})
}

// Run connects to the source cluster, starts the workers and blocks until
// ctx ends; then it shuts the queues down and waits for every goroutine it
// started.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	logger := klog.FromContext(ctx)
	c.logger = logger
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	c.watches.Start(ctx, c)
	c.startReads(ctx)
	defer func() {
		cancel() // the cluster ConfigMap's informer too, even when connecting failed
		c.stopReads()
		c.queue.ShutDown()
		c.fixes.ShutDown()
		c.statuses.ShutDown()
		c.crashQueue.ShutDown()
		wg.Wait()
		if src := c.src.Load(); src != nil {
			src.stop()
		}
		c.watches.Shutdown()
	}()
	c.watchCluster(ctx, &wg)
	if c.objEvents != nil {
		wg.Go(func() { c.objEvents.Run(klog.NewContext(ctx, logger.WithName("events"))) })
	}
	clients, swapped := c.sources.Source()
	src, err := c.connect(ctx, ctx, clients)
	if err != nil {
		return err
	}
	c.activate(src)
	c.metrics.SourceConnected.Set(1)
	c.synced.Store(true)
	logger.Info("Bundle cache synced; starting workers", "namespace", c.opts.Namespace, "workers", c.opts.Workers)
	c.startWorkers(ctx, &wg, swapped)
	<-ctx.Done()
	c.synced.Store(false)
	c.metrics.SourceConnected.Set(0)
	return nil
}

// startWorkers starts the goroutines that Run owns once connected: the
// sync, correction, status and crash workers, the resync safety net and
// the source's supervisor. They stop when ctx ends and the queues shut
// down; wg waits for them.
func (c *Controller) startWorkers(ctx context.Context, wg *sync.WaitGroup, swapped <-chan struct{}) {
	run := func(f func(context.Context) bool) {
		wg.Go(func() {
			defer utilruntime.HandleCrashWithContext(ctx)
			for f(ctx) {
			}
		})
	}
	fixWorkers := c.opts.FixWorkers
	if fixWorkers <= 0 {
		fixWorkers = 8 * c.opts.Workers
	}
	for i := 0; i < c.opts.Workers; i++ {
		run(c.processBundle)
	}
	for i := 0; i < fixWorkers; i++ {
		run(c.processFix)
	}
	run(c.processStatus)
	run(c.processCrash)
	wg.Go(func() { c.resyncLoop(ctx) })
	wg.Go(func() { c.superviseSource(ctx, swapped) })
}

// applierFor returns the Applier that reads and writes a Bundle's objects
// with access: the agent's own, or one impersonating the ServiceAccount the
// Bundle acts as. The agent's identity keeps only the watches, the ApplySet
// parents and the status.
func (c *Controller) applierFor(access manifests.Access) (*apply.Applier, error) {
	sa := access.ServiceAccount
	if access.Agent() {
		return c.applier, nil
	}
	if c.opts.ActAs == nil {
		return nil, fmt.Errorf("serviceAccountName %s: this agent cannot impersonate", sa)
	}
	clients, err := c.opts.ActAs(sa)
	if err != nil {
		return nil, fmt.Errorf("serviceAccountName %s: %w", sa, err)
	}
	return c.applier.As(clients.Dynamic, clients.Metadata), nil
}

// Ready reports whether the Bundle cache has synced and the workers run.
func (c *Controller) Ready() bool { return c.synced.Load() }

// processNext takes one item from q and runs sync on it: Forget on
// success, AddRateLimited on error (after onError, which logs). It returns
// false once q is shut down.
func processNext[K comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[K],
	sync func(context.Context, K) error, onError func(K, error)) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	if err := sync(ctx, key); err != nil {
		onError(key, err)
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}

func (c *Controller) processBundle(ctx context.Context) bool {
	return processNext(ctx, c.queue, c.countedSync, func(key types.NamespacedName, err error) {
		c.logger.Error(err, "Sync failed; retrying", "bundle", key)
	})
}

// countedSync is syncBundle, and the last sync or correction to finish
// with nothing queued releases the memory that they used.
func (c *Controller) countedSync(ctx context.Context, key types.NamespacedName) error {
	c.syncing.Add(1)
	err := c.syncBundle(ctx, key)
	c.syncing.Add(-1)
	c.releaseMemoryWhenIdle()
	return err
}

// countedFix is correct, counted like countedSync.
func (c *Controller) countedFix(ctx context.Context, key fixKey) error {
	c.fixing.Add(1)
	err := c.correct(ctx, key)
	c.churn.Add(1)
	c.fixing.Add(-1)
	c.releaseMemoryWhenIdle()
	return err
}

// releaseMemoryWhenIdle returns the heap of finished syncs and corrections
// to the operating system when nothing runs or waits and they handled
// enough objects to matter (Options.ReleaseMemoryAfter). It costs one
// garbage collection, which at steady state is small: the agent's live
// heap is its caches, not the syncs' decoded documents.
func (c *Controller) releaseMemoryWhenIdle() {
	n := int64(c.opts.ReleaseMemoryAfter)
	if n <= 0 || c.churn.Load() < n ||
		c.syncing.Load() != 0 || c.fixing.Load() != 0 || c.queue.Len() != 0 || c.fixes.Len() != 0 {
		return
	}
	if c.churn.Swap(0) < n {
		return // another worker released it a moment ago
	}
	start := time.Now()
	debug.FreeOSMemory()
	c.logger.V(2).Info("Released the memory of finished syncs and corrections", "took", time.Since(start))
}

// resyncLoop is the safety net: every ResyncPeriod, every owned object in
// the caches is checked against the recorded applied state. No API calls.
func (c *Controller) resyncLoop(ctx context.Context) {
	if c.opts.ResyncPeriod <= 0 {
		return
	}
	t := time.NewTicker(c.opts.ResyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.checkAll()
		}
	}
}

func (c *Controller) checkAll() {
	c.mu.Lock()
	type item struct {
		key types.NamespacedName
		d   apply.Desired
	}
	var items []item
	for key, s := range c.states {
		s.mu.Lock()
		for ref, d := range s.desired {
			if _, ok := s.applied[ref]; ok {
				items = append(items, item{key, d})
			}
		}
		s.mu.Unlock()
	}
	c.mu.Unlock()
	for _, it := range items {
		obj, ok := c.watches.Get(it.d.GVR, it.d.Ref.Namespace, it.d.Ref.Name)
		if !ok {
			c.onGone(it.d.GVR, it.d.Ref.Namespace, it.d.Ref.Name)
			continue
		}
		c.check(it.d.GVR, obj)
	}
}

// WatchedCounts implements metrics.WatchedCounter: what
// driftwatch_watched_objects shows when scraped.
func (c *Controller) WatchedCounts() []metrics.WatchedCount {
	var out []metrics.WatchedCount
	for _, gvr := range c.watches.Running() {
		out = append(out, metrics.WatchedCount{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource, Objects: c.watches.Count(gvr)})
	}
	return out
}

// OnUpsert implements watch.Handler.
func (c *Controller) OnUpsert(gvr schema.GroupVersionResource, obj *watch.Object) {
	c.check(gvr, obj)
	if obj.Readiness != nil {
		// Readiness may have changed: the status says so (written only
		// when it changes).
		if s, _, ok := c.lookup(gvr, obj.Namespace, obj.Name, obj.Labels()); ok {
			c.statusSoon(s.key)
		}
	}
	if gvr == watch.PodsGVR && obj.Pod != nil && obj.Pod.Phase == corev1.PodFailed {
		c.podFailed(gvr, obj)
	}
}

// OnDelete implements watch.Handler.
func (c *Controller) OnDelete(gvr schema.GroupVersionResource, obj *watch.Object) {
	c.onGone(gvr, obj.Namespace, obj.Name)
}

var _ watch.Handler = (*Controller)(nil)
