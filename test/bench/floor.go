package main

// Baseline "floor": the least any watch-driven agent can do. A
// metadata-only informer over the floor's own ConfigMaps; the moment
// another manager holds one of its fields (its Apply entry in managedFields
// lost fields it had after its own apply) the handler re-applies the object
// with a forced server-side apply, and it re-creates a deleted object. No
// queue, no status, no metrics.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

const (
	floorManager = "bench-floor"
	floorLabel   = "bench.driftwatch.io/floor"
)

var (
	cmGVR       = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	floorLabels = map[string]string{floorLabel: "true"}
)

// floor is the reference loop.
type floor struct {
	kube kubernetes.Interface
	meta metadata.Interface
	n    int
	// deployments of its own, as the agent's (addDeployments): 0 in the
	// scenarios that edit ConfigMaps only.
	deployments int

	mu      sync.Mutex
	applied map[string]*fieldpath.Set // kind/name → our fields after our last apply
	err     error                     // the first failed correction

	corrections atomic.Int64
	// handled and applying sum, over the corrections, the time from the
	// handler's start to the apply's response and the apply call alone.
	handled, applying atomic.Int64  // nanoseconds
	retries           *atomic.Int64 // requests repeated after a broken connection
	stop              context.CancelFunc
	done              chan struct{}
}

func floorName(i int) string  { return fmt.Sprintf("floor-%04d", i) }
func floorValue(i int) string { return fmt.Sprintf("value-%d", i) }

// newFloor applies the floor's n ConfigMaps (32 workers).
func newFloor(ctx context.Context, kube kubernetes.Interface, meta metadata.Interface, n int, retries *atomic.Int64) (*floor, error) {
	f := &floor{kube: kube, meta: meta, n: n, applied: map[string]*fieldpath.Set{}, retries: retries}
	var jobs []func(context.Context) error
	for i := 0; i < n; i++ {
		jobs = append(jobs, func(ctx context.Context) error { return f.apply(ctx, floorName(i), floorValue(i)) })
	}
	if _, err := parallel(ctx, ceilingWorkers, jobs, retries); err != nil {
		return nil, fmt.Errorf("floor objects: %w", err)
	}
	return f, nil
}

// addDeployments applies n Deployments of the floor, the same as the
// agent's (depApply) in the floor's namespace, before start.
func (f *floor) addDeployments(ctx context.Context, n int) error {
	var jobs []func(context.Context) error
	for d := 0; d < n; d++ {
		jobs = append(jobs, func(ctx context.Context) error { return f.applyDeployment(ctx, d) })
	}
	f.deployments = n
	if _, err := parallel(ctx, ceilingWorkers, jobs, f.retries); err != nil {
		return fmt.Errorf("floor Deployments: %w", err)
	}
	return nil
}

func (f *floor) applyDeployment(ctx context.Context, d int) error {
	dep, err := f.kube.AppsV1().Deployments(floorNS).Apply(ctx, depApply(d, floorNS).WithLabels(floorLabels),
		metav1.ApplyOptions{FieldManager: floorManager, Force: true})
	if err != nil {
		return fmt.Errorf("floor: applying Deployment %s: %w", depName(d), err)
	}
	return f.record("Deployment/"+dep.Name, dep.ManagedFields)
}

// record keeps the fields of an apply's response.
func (f *floor) record(key string, entries []metav1.ManagedFieldsEntry) error {
	set, err := ownedFields(entries)
	if err != nil {
		return fmt.Errorf("floor: %s: %w", key, err)
	}
	f.mu.Lock()
	f.applied[key] = set
	f.mu.Unlock()
	return nil
}

// apply force-applies one of the floor's ConfigMaps and records the fields
// the server says we own.
func (f *floor) apply(ctx context.Context, name, value string) error {
	cm, err := f.kube.CoreV1().ConfigMaps(floorNS).Apply(ctx, cmApply(name, floorNS, value, floorLabels),
		metav1.ApplyOptions{FieldManager: floorManager, Force: true})
	if err != nil {
		return fmt.Errorf("floor: applying %s: %w", name, err)
	}
	return f.record("ConfigMap/"+name, cm.ManagedFields)
}

// ownedFields is the field set of the floor's Apply entry (empty if none).
func ownedFields(entries []metav1.ManagedFieldsEntry) (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	for _, e := range entries {
		if e.Manager == floorManager && e.Operation == metav1.ManagedFieldsOperationApply && e.FieldsV1 != nil {
			if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// start runs the informers until close.
func (f *floor) start(ctx context.Context) error {
	ctx, f.stop = context.WithCancel(ctx)
	f.done = make(chan struct{})
	factory := metadatainformer.NewFilteredSharedInformerFactory(f.meta, 0, floorNS, func(o *metav1.ListOptions) {
		o.LabelSelector = floorLabel
	})
	kinds := map[string]schema.GroupVersionResource{"ConfigMap": cmGVR}
	if f.deployments > 0 {
		kinds["Deployment"] = deploymentGVR
	}
	var informers []cache.SharedIndexInformer
	for kind, gvr := range kinds {
		inf := factory.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { f.check(ctx, kind, obj) },
			UpdateFunc: func(_, obj any) { f.check(ctx, kind, obj) },
			DeleteFunc: func(obj any) {
				start := time.Now()
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
					f.correct(ctx, kind, m.Name, start)
				}
			},
		}); err != nil {
			return err
		}
		informers = append(informers, inf)
	}
	var wg sync.WaitGroup
	for _, inf := range informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	go func() {
		defer close(f.done)
		wg.Wait()
	}()
	for _, inf := range informers {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			f.close()
			return fmt.Errorf("floor informer did not sync")
		}
	}
	return nil
}

// check re-applies an object whose Apply entry lost fields.
func (f *floor) check(ctx context.Context, kind string, obj any) {
	start := time.Now()
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	f.mu.Lock()
	want := f.applied[kind+"/"+m.Name]
	f.mu.Unlock()
	if want == nil {
		return // not (yet) ours
	}
	now, err := ownedFields(m.ManagedFields)
	if err != nil {
		f.fail(err)
		return
	}
	if !want.Difference(now).Empty() {
		f.correct(ctx, kind, m.Name, start)
	}
}

// correct applies the object again; start is when its event reached the
// handler.
func (f *floor) correct(ctx context.Context, kind, name string, start time.Time) {
	var i int
	var apply func(context.Context) error
	switch _, cmErr := fmt.Sscanf(name, "floor-%d", &i); {
	case kind == "ConfigMap" && cmErr == nil:
		apply = func(ctx context.Context) error { return f.apply(ctx, name, floorValue(i)) }
	case kind == "Deployment":
		if _, err := fmt.Sscanf(name, "app-%d", &i); err != nil {
			return // not one of ours
		}
		apply = func(ctx context.Context) error { return f.applyDeployment(ctx, i) }
	default:
		return // not one of ours
	}
	at := time.Now()
	err := apply(ctx)
	for try := 0; try < 2 && broken(ctx, err); try++ {
		f.retries.Add(1)
		err = apply(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			f.fail(err)
		}
		return
	}
	f.applying.Add(int64(time.Since(at)))
	f.handled.Add(int64(time.Since(start)))
	f.corrections.Add(1)
}

// trace returns the mean time from a drift event's handler to the
// correction's response, and of the apply call alone, in milliseconds.
func (f *floor) trace() (handled, applying float64) {
	n := float64(max(f.corrections.Load(), 1))
	return float64(f.handled.Load()) / n / 1e6, float64(f.applying.Load()) / n / 1e6
}

func (f *floor) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// failure returns the first failed correction, if any.
func (f *floor) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *floor) close() {
	if f.stop != nil {
		f.stop()
		<-f.done
	}
}
