package drift

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/drift/events"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

// source is one connection to the source cluster: the Bundle informer and
// the writers of status and events, all on one set of clients, run under
// their own context so that they can be replaced together when the
// cluster provider hands out new clients. The target side — informers,
// caches, applied state — does not depend on it.
type source struct {
	client dynamic.Interface
	// bundles and restrictions are the Bundles and BundleRestrictions of
	// the namespaces the agent watches.
	bundles, restrictions *watch.Namespaced
	broadcaster           record.EventBroadcaster
	recorder              record.EventRecorder
	cancel                context.CancelFunc
	done                  chan struct{} // closed when the informers have stopped
}

// connect starts a connection on clients, running until ctx ends, and
// returns it once its Bundle and BundleRestriction caches have synced; it
// gives up, and stops the connection, when wait ends first.
func (c *Controller) connect(ctx, wait context.Context, clients *clusters.Clients) (*source, error) {
	ctx, cancel := context.WithCancel(ctx)
	src := &source{client: clients.Dynamic, cancel: cancel, done: make(chan struct{})}
	namespaces := c.bundleNamespaces()
	src.bundles = watch.NewNamespaced(clients.Dynamic, manifests.BundleGVR, namespaces)
	src.restrictions = watch.NewNamespaced(clients.Dynamic, manifests.RestrictionGVR, namespaces)
	// The source connection: lost on a watch error, back once the Bundle
	// watch delivers again (after a re-list every Bundle is delivered anew)
	// or a status write succeeds.
	for _, inf := range src.bundles.Informers() {
		_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			if c.src.Load() == src { // a connection still syncing is not the one in use
				c.metrics.SourceConnected.Set(0)
			}
			cache.DefaultWatchErrorHandler(ctx, r, err)
		}) // fails only once the informer runs; it has not started
		_, _ = inf.AddEventHandler(c.bundleHandler(src)) // fails only once stopped
	}
	for _, inf := range src.restrictions.Informers() {
		_, _ = inf.AddEventHandler(c.restrictionHandler(src)) // fails only once stopped
	}
	src.broadcaster = record.NewBroadcaster(record.WithContext(ctx))
	src.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clients.Kube.CoreV1().Events("")})
	src.recorder = src.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: c.applier.FieldManager()})
	go func() {
		defer close(src.done)
		var wg sync.WaitGroup
		wg.Go(func() { src.bundles.Run(ctx) })
		wg.Go(func() { src.restrictions.Run(ctx) })
		wg.Wait()
	}()
	waiting, stopWaiting := context.WithCancel(wait)
	defer stopWaiting()
	unlink := context.AfterFunc(ctx, stopWaiting) // the connection's end ends the wait too
	defer unlink()
	if !cache.WaitForCacheSync(waiting.Done(), src.bundles.HasSynced, src.restrictions.HasSynced) {
		src.stop()
		return nil, fmt.Errorf("bundle and bundlerestriction informers did not sync in namespaces %q: %w", namespaces, context.Cause(waiting))
	}
	return src, nil
}

// bundleNamespaces are the namespaces whose Bundles are watched: the
// agent's own and those it is told to watch, or all (NamespaceAll).
func (c *Controller) bundleNamespaces() []string {
	out := []string{c.opts.Namespace}
	for _, ns := range c.opts.BundleNamespaces {
		if ns == metav1.NamespaceAll {
			return []string{metav1.NamespaceAll}
		}
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// Restrictions implements tenancy.RestrictionLister from the source
// cluster's cache.
func (c *Controller) Restrictions(namespace string) ([]manifests.BundleRestriction, error) {
	src := c.src.Load()
	if src == nil {
		return nil, errors.New("the source cluster is not connected")
	}
	var out []manifests.BundleRestriction
	for _, obj := range src.restrictions.InNamespace(namespace) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var r manifests.BundleRestriction
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
			return nil, fmt.Errorf("BundleRestriction %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		out = append(out, r)
	}
	return out, nil
}

// restrictionHandler syncs every Bundle of a namespace whose restrictions
// changed, once src is the active connection.
func (c *Controller) restrictionHandler(src *source) cache.ResourceEventHandler {
	requeue := func(obj any) {
		if c.src.Load() != src {
			return
		}
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, ok := obj.(metav1.Object)
		if !ok {
			return
		}
		for _, b := range src.bundles.InNamespace(m.GetNamespace()) {
			c.enqueueBundle(b)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    requeue,
		UpdateFunc: func(_, obj any) { requeue(obj) },
		DeleteFunc: requeue,
	}
}

// stop ends the connection and waits for its informer.
func (s *source) stop() {
	s.cancel()
	<-s.done
	s.broadcaster.Shutdown()
}

// superviseSource replaces the source connection whenever the cluster
// provider replaces the source cluster's clients: the new connection
// syncs its Bundle cache first, then takes over, then the old one stops,
// so that no worker ever reads an empty cache (which would look like every
// Bundle deleted). Every Bundle the new cache lists is queued; a Bundle
// unchanged on the new server writes nothing but its status.
func (c *Controller) superviseSource(ctx context.Context, swapped <-chan struct{}) {
	for {
		answering := c.sources.Answering()
		select {
		case <-ctx.Done():
			return
		case <-answering:
			c.flushStatuses()
			continue
		case <-swapped:
		}
		var clients *clusters.Clients
		clients, swapped = c.sources.Source()
		src, err := c.connectUntilSwapped(ctx, clients, swapped)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.Error(err, "Cannot connect to the source cluster with its new clients; keeping the old connection", "host", clients.Config.Host)
			}
			continue
		}
		old := c.activate(src)
		old.stop()
		c.metrics.SourceConnected.Set(1)
		c.flushStatuses()
		c.logger.Info("Source cluster clients replaced; Bundle cache synced on the new ones", "host", clients.Config.Host)
	}
}

// activate makes src the connection that workers use and queues every
// Bundle its cache holds: the events of its first list arrived while it
// was not active yet. It returns the connection it replaced (nil at first).
func (c *Controller) activate(src *source) *source {
	old := c.src.Swap(src)
	for _, obj := range src.bundles.List() {
		c.enqueueBundle(obj)
	}
	return old
}

// connectTimeout bounds the wait for a new connection's Bundle cache.
const connectTimeout = time.Minute

// connectUntilSwapped connects on clients, giving up when they are
// replaced again meanwhile (the next ones are then tried at once) or after
// connectTimeout (new clients that cannot list Bundles — a wrong CA, a
// server that refuses them — must not leave the old connection in place
// for good, nor the next change unheard).
func (c *Controller) connectUntilSwapped(ctx context.Context, clients *clusters.Clients, swapped <-chan struct{}) (*source, error) {
	wait, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	go func() {
		select {
		case <-swapped:
			cancel()
		case <-wait.Done():
		}
	}()
	return c.connect(ctx, wait, clients)
}

// bundleHandler queues Bundles as the informer of src shows them, once src
// is the active connection: before that, workers would read the old cache.
// Bundles that the old source held and the new one does not are not
// deleted: their state stays and their objects are still corrected.
func (c *Controller) bundleHandler(src *source) cache.ResourceEventHandler {
	active := func() bool { return c.src.Load() == src }
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if !active() {
				return
			}
			c.connected()
			c.enqueueBundle(obj)
			if m, ok := obj.(metav1.Object); ok {
				c.queueDependentsIn(m.GetNamespace()) // one may wait for this one
			}
		},
		UpdateFunc: func(old, obj any) {
			if !active() {
				return
			}
			c.connected()
			// Our own status writes change neither generation nor
			// deletion state, and the finalizer a sync adds is already
			// known to that sync: they need no further sync (a sync of a
			// large Bundle decodes all of it). A finalizer of ours that
			// someone removed is put back.
			o, n := old.(*unstructured.Unstructured), obj.(*unstructured.Unstructured)
			if o.GetGeneration() != n.GetGeneration() || n.GetDeletionTimestamp() != nil ||
				(hasFinalizer(o) && !hasFinalizer(n)) {
				c.enqueueBundle(obj)
			}
			c.queueDependents(o, n) // a Bundle that became Ready (or stopped being) may unblock others
		},
		DeleteFunc: func(obj any) {
			if active() {
				c.enqueueBundle(obj)
			}
		},
	}
}

// connected marks the source cluster reachable, once the workers run.
func (c *Controller) connected() {
	if c.synced.Load() {
		c.metrics.SourceConnected.Set(1)
	}
}

func hasFinalizer(u *unstructured.Unstructured) bool {
	return slices.Contains(u.GetFinalizers(), Finalizer)
}

func (c *Controller) enqueueBundle(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	c.queue.Add(types.NamespacedName{Namespace: ns, Name: name})
}

// cachedBundle returns the Bundle from the informer cache, nil if gone.
func (c *Controller) cachedBundle(key types.NamespacedName) *unstructured.Unstructured {
	u, _ := c.src.Load().bundles.Get(key).(*unstructured.Unstructured)
	return u
}

// bundleFromCache returns the Bundle from the informer cache, nil if gone.
func (c *Controller) bundleFromCache(key types.NamespacedName) (*unstructured.Unstructured, *manifests.Bundle, error) {
	u := c.cachedBundle(key)
	if u == nil {
		return nil, nil, nil
	}
	var b manifests.Bundle
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
		return u, nil, fmt.Errorf("bundle %s: %w", key, err)
	}
	return u, &b, nil
}

// event records an event on a Bundle, if it still exists.
func (c *Controller) event(key types.NamespacedName, eventType, reason, format string, args ...any) {
	if u := c.cachedBundle(key); u != nil {
		c.src.Load().recorder.Eventf(u, eventType, reason, format, args...)
	}
}

// warn records a Warning event.
func (c *Controller) warn(key types.NamespacedName, reason, format string, args ...any) {
	c.event(key, corev1.EventTypeWarning, reason, format, args...)
}

// sourceClient returns the source cluster's client of the current
// connection.
func (c *Controller) sourceClient() dynamic.Interface { return c.src.Load().client }

// flushStatuses writes every Bundle's status now: those that failed while
// the source was away wait in the status queue's back-off, which can be
// minutes by then. The queue holds each Bundle once, so what piles up while
// the source is away is bounded by the number of Bundles and de-duplicated.
func (c *Controller) flushStatuses() {
	c.mu.Lock()
	keys := make([]types.NamespacedName, 0, len(c.states))
	for key := range c.states {
		keys = append(keys, key)
	}
	c.mu.Unlock()
	for _, key := range keys {
		c.statuses.Forget(key)
		c.statuses.Add(key)
	}
	c.logger.V(2).Info("Source cluster answers again; writing every Bundle's status", "bundles", len(keys))
}

// objectEvent records an event about one owned object: regarding the
// object, related to the Bundle, in the target cluster. Without a target
// event writer (tests), or for a document without a name, it is recorded
// on the Bundle. It makes no API call and takes no lock of the
// controller's nor of a Bundle's: callers may hold either.
func (c *Controller) objectEvent(bundle types.NamespacedName, apiVersion string, ref manifests.ObjectRef, eventType, reason, action, format string, args ...any) {
	if c.objEvents == nil || ref.Name == "" {
		c.event(bundle, eventType, reason, format, args...)
		return
	}
	var uid types.UID
	if u := c.cachedBundle(bundle); u != nil {
		uid = u.GetUID()
	}
	regarding := corev1.ObjectReference{APIVersion: apiVersion, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
	c.objEvents.Emit(regarding, events.BundleRef(bundle, uid), eventType, reason, action, fmt.Sprintf(format, args...))
}
