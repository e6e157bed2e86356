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

	mu      sync.Mutex
	applied map[string]*fieldpath.Set // name → our fields after our last apply
	err     error                     // the first failed correction

	corrections atomic.Int64
	retries     *atomic.Int64 // requests repeated after a broken connection
	stop        context.CancelFunc
	done        chan struct{}
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

// apply force-applies one of the floor's ConfigMaps and records the fields
// the server says we own.
func (f *floor) apply(ctx context.Context, name, value string) error {
	cm, err := f.kube.CoreV1().ConfigMaps(floorNS).Apply(ctx, cmApply(name, floorNS, value, floorLabels),
		metav1.ApplyOptions{FieldManager: floorManager, Force: true})
	if err != nil {
		return fmt.Errorf("floor: applying %s: %w", name, err)
	}
	set, err := ownedFields(cm.ManagedFields)
	if err != nil {
		return fmt.Errorf("floor: %s: %w", name, err)
	}
	f.mu.Lock()
	f.applied[name] = set
	f.mu.Unlock()
	return nil
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

// start runs the informer until close.
func (f *floor) start(ctx context.Context) error {
	ctx, f.stop = context.WithCancel(ctx)
	f.done = make(chan struct{})
	factory := metadatainformer.NewFilteredSharedInformerFactory(f.meta, 0, floorNS, func(o *metav1.ListOptions) {
		o.LabelSelector = floorLabel
	})
	inf := factory.ForResource(cmGVR).Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { f.check(ctx, obj) },
		UpdateFunc: func(_, obj any) { f.check(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				f.correct(ctx, m.Name)
			}
		},
	}); err != nil {
		return err
	}
	go func() {
		defer close(f.done)
		inf.RunWithContext(ctx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		f.close()
		return fmt.Errorf("floor informer did not sync")
	}
	return nil
}

// check re-applies an object whose Apply entry lost fields.
func (f *floor) check(ctx context.Context, obj any) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	f.mu.Lock()
	want := f.applied[m.Name]
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
		f.correct(ctx, m.Name)
	}
}

func (f *floor) correct(ctx context.Context, name string) {
	var i int
	if _, err := fmt.Sscanf(name, "floor-%d", &i); err != nil {
		return // not one of ours
	}
	err := f.apply(ctx, name, floorValue(i))
	for try := 0; try < 2 && broken(ctx, err); try++ {
		f.retries.Add(1)
		err = f.apply(ctx, name, floorValue(i))
	}
	if err != nil {
		if ctx.Err() == nil {
			f.fail(err)
		}
		return
	}
	f.corrections.Add(1)
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
