package main

// The benchmark's own view of the objects: watches on the agent's and the
// floor's ConfigMaps and the agent's Deployments, which tell waiters when
// an edited object was first seen edited and then restored. Each waiter
// follows one object's events in resourceVersion order, so a restoration is
// only recognised after the edit itself.

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// objKey names a watched object.
type objKey struct {
	kind, namespace, name string
}

func (k objKey) String() string { return k.kind + " " + k.namespace + "/" + k.name }

// state is a predicate on one watch event of an object.
type state func(watch.EventType, runtime.Object) bool

// waiter waits for an object to pass through edited, then restored.
type waiter struct {
	edited, restored state
	seenEdit         bool
	at               chan time.Time // receives when restored was seen
}

// observer dispatches watch events to waiters.
type observer struct {
	mu      sync.Mutex
	waiters map[objKey][]*waiter
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// startObserver watches the agent's ConfigMaps and Deployments (by the
// ownership label) and the floor's, from now on.
func startObserver(ctx context.Context, kube kubernetes.Interface) (*observer, error) {
	ctx, cancel := context.WithCancel(ctx)
	o := &observer{waiters: map[objKey][]*waiter{}, stop: cancel}
	cms := func(ns, selector string) *cache.ListWatch {
		return &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = selector
			return kube.CoreV1().ConfigMaps(ns).Watch(ctx, opts)
		}}
	}
	deps := func(ns, selector string) *cache.ListWatch {
		return &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = selector
			return kube.AppsV1().Deployments(ns).Watch(ctx, opts)
		}}
	}
	// The current resourceVersion: watches start here, without replaying
	// every object as added.
	list, err := kube.CoreV1().ConfigMaps(floorNS).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		cancel()
		return nil, err
	}
	for _, lw := range []*cache.ListWatch{cms("", ownedSelector), cms(floorNS, floorLabel), deps("", ownedSelector), deps(floorNS, floorLabel)} {
		rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
		if err != nil {
			o.close()
			return nil, err
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			defer rw.Stop()
			for {
				select {
				case ev, ok := <-rw.ResultChan():
					if !ok {
						return
					}
					o.dispatch(ev)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return o, nil
}

func (o *observer) close() { o.stop(); o.wg.Wait() }

// expect registers a waiter for key; call it before the edit.
func (o *observer) expect(key objKey, edited, restored state) *waiter {
	w := &waiter{edited: edited, restored: restored, at: make(chan time.Time, 1)}
	o.mu.Lock()
	o.waiters[key] = append(o.waiters[key], w)
	o.mu.Unlock()
	return w
}

// forget drops a waiter whose edit failed.
func (o *observer) forget(key objKey, w *waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ws := o.waiters[key]
	for i, x := range ws {
		if x == w {
			o.waiters[key] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(o.waiters[key]) == 0 {
		delete(o.waiters, key)
	}
}

func (o *observer) dispatch(ev watch.Event) {
	now := time.Now()
	var key objKey
	switch obj := ev.Object.(type) {
	case *corev1.ConfigMap:
		key = objKey{"ConfigMap", obj.Namespace, obj.Name}
	case *appsv1.Deployment:
		key = objKey{"Deployment", obj.Namespace, obj.Name}
	default:
		return // bookmarks, errors the retry watcher passes on
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ws := o.waiters[key]
	kept := ws[:0]
	for _, w := range ws {
		switch {
		case !w.seenEdit:
			w.seenEdit = w.edited(ev.Type, ev.Object)
		case w.restored(ev.Type, ev.Object):
			w.at <- now
			continue
		}
		kept = append(kept, w)
	}
	if len(kept) == 0 {
		delete(o.waiters, key)
	} else {
		o.waiters[key] = kept
	}
}

// wait returns when the waiter saw the restoration, or fails at timeout.
func (w *waiter) wait(ctx context.Context, key objKey, timeout time.Duration) (time.Time, error) {
	select {
	case t := <-w.at:
		return t, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("%s not restored within %s (edit seen: %t)", key, timeout, w.seenEdit)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// Predicates on watch events.

func cmValueIs(v string) state {
	return func(t watch.EventType, o runtime.Object) bool {
		cm, ok := o.(*corev1.ConfigMap)
		return ok && t != watch.Deleted && cm.Data["key"] == v
	}
}

func isDeleted(t watch.EventType, _ runtime.Object) bool { return t == watch.Deleted }
func exists(t watch.EventType, _ runtime.Object) bool    { return t != watch.Deleted }

func replicasAre(n int32) state {
	return func(t watch.EventType, o runtime.Object) bool {
		d, ok := o.(*appsv1.Deployment)
		return ok && t != watch.Deleted && d.Spec.Replicas != nil && *d.Spec.Replicas == n
	}
}

func imageIs(image string) state {
	return func(t watch.EventType, o runtime.Object) bool {
		d, ok := o.(*appsv1.Deployment)
		if !ok || t == watch.Deleted {
			return false
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "app" {
				return c.Image == image
			}
		}
		return false
	}
}
