package main

// Bundles: creating them, bumping their generation for a re-sync, and
// knowing — from a watch, not by polling large objects — when every one is
// Synced: status.observedGeneration == metadata.generation and
// status.summary.ready == its object count.

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/driftwatch/driftwatch/manifests"
)

// createBundles creates the workload's Bundles for the agent.
func createBundles(ctx context.Context, dyn dynamic.Interface, w *workload) error {
	for _, b := range w.bundles {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": manifests.Group + "/" + manifests.Version, "kind": manifests.Kind,
			"metadata": map[string]any{"name": b.name, "namespace": bundleNamespace},
			"spec": map[string]any{"defaultNamespace": nsName(agentPrefix, b.ns),
				"resources": []any{map[string]any{"name": "objects.yaml", "content": b.yaml("")}}},
		}}
		if _, err := dyn.Resource(manifests.BundleGVR).Namespace(bundleNamespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("bundle %s: %w", b.name, err)
		}
	}
	return nil
}

// touchBundles bumps every Bundle's generation without changing what it
// declares (spec.paused: false is the default, written out), so that the
// agent re-syncs them all. It fails if a generation did not move.
func touchBundles(ctx context.Context, dyn dynamic.Interface, w *workload) error {
	for _, b := range w.bundles {
		client := dyn.Resource(manifests.BundleGVR).Namespace(bundleNamespace)
		before, err := client.Get(ctx, b.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		after, err := client.Patch(ctx, b.name, types.MergePatchType, []byte(`{"spec":{"paused":false}}`), metav1.PatchOptions{FieldManager: "bench"})
		if err != nil {
			return fmt.Errorf("touching bundle %s: %w", b.name, err)
		}
		if after.GetGeneration() == before.GetGeneration() {
			return fmt.Errorf("touching bundle %s did not change its generation (%d)", b.name, after.GetGeneration())
		}
	}
	return nil
}

// bundleWatch follows the Bundles' status through an informer.
type bundleWatch struct {
	informer cache.SharedIndexInformer
	want     map[string]int // bundle name → objects
	changed  chan struct{}  // a Bundle changed since the last check
	stop     context.CancelFunc
	done     chan struct{}
}

func newBundleWatch(ctx context.Context, dyn dynamic.Interface, w *workload) (*bundleWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, bundleNamespace, nil)
	bw := &bundleWatch{informer: f.ForResource(manifests.BundleGVR).Informer(), want: map[string]int{},
		changed: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	for _, b := range w.bundles {
		bw.want[b.name] = b.objects()
	}
	notify := func() {
		select {
		case bw.changed <- struct{}{}:
		default:
		}
	}
	if _, err := bw.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(bw.done)
		bw.informer.RunWithContext(ctx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), bw.informer.HasSynced) {
		bw.close()
		return nil, fmt.Errorf("bundle informer did not sync")
	}
	return bw, nil
}

func (bw *bundleWatch) close() { bw.stop(); <-bw.done }

// applied reports whether every Bundle has observed its generation, is
// Synced and has every object applied (ready or not yet), and if not, why:
// the end of the initial sync, as kubectl's and the ceiling's applies end
// without waiting for Pods.
func (bw *bundleWatch) applied() (bool, string) {
	return bw.every("applied", func(u *unstructured.Unstructured) (int64, bool) {
		ready, _, _ := unstructured.NestedInt64(u.Object, "status", "summary", "ready")
		notReady, _, _ := unstructured.NestedInt64(u.Object, "status", "summary", "notReady")
		return ready + notReady, conditionTrue(u, "Synced")
	})
}

// check reports whether every Bundle is Synced with all its objects ready,
// and if not, why.
func (bw *bundleWatch) check() (bool, string) {
	return bw.every("ready", func(u *unstructured.Unstructured) (int64, bool) {
		ready, _, _ := unstructured.NestedInt64(u.Object, "status", "summary", "ready")
		return ready, true
	})
}

// every reports whether every Bundle has observed its generation and
// counts, with count, all its objects as done (what: "applied", "ready").
func (bw *bundleWatch) every(what string, count func(*unstructured.Unstructured) (done int64, ok bool)) (bool, string) {
	items := bw.informer.GetStore().List()
	if len(items) != len(bw.want) {
		return false, fmt.Sprintf("%d of %d bundles exist", len(items), len(bw.want))
	}
	pending, doneAll := 0, 0
	var example string
	for _, it := range items {
		u := it.(*unstructured.Unstructured)
		og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		done, ok := count(u)
		doneAll += int(done)
		if og != u.GetGeneration() || !ok || int(done) != bw.want[u.GetName()] {
			pending++
			if example == "" {
				example = fmt.Sprintf("%s: generation %d observed %d, %s %d of %d", u.GetName(), u.GetGeneration(), og, what, done, bw.want[u.GetName()])
			}
		}
	}
	if pending > 0 {
		return false, fmt.Sprintf("%d bundles pending, %d objects %s (e.g. %s)", pending, doneAll, what, example)
	}
	return true, ""
}

func conditionTrue(u *unstructured.Unstructured, condition string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == condition {
			return m["status"] == "True"
		}
	}
	return false
}

// waitSynced waits until check holds and returns when it was seen to hold.
// It fails early if the agent exits.
func (bw *bundleWatch) waitSynced(ctx context.Context, a *agentProc, timeout time.Duration) (time.Time, error) {
	return bw.wait(ctx, a, timeout, bw.check)
}

// waitApplied waits until applied holds and returns when it was seen to
// hold.
func (bw *bundleWatch) waitApplied(ctx context.Context, a *agentProc, timeout time.Duration) (time.Time, error) {
	return bw.wait(ctx, a, timeout, bw.applied)
}

func (bw *bundleWatch) wait(ctx context.Context, a *agentProc, timeout time.Duration, check func() (bool, string)) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ok, why := check()
		if ok {
			return time.Now(), nil
		}
		select {
		case <-bw.changed:
		case <-a.done:
			return time.Time{}, a.exited()
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("bundles not synced within %s: %s", timeout, why)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
