package main

// Baseline "ceiling": what the API server can take — raw parallel
// server-side apply with client-go, 32 workers, no client-side throttling,
// of the same objects into fresh namespaces.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

const (
	ceilingWorkers = 32
	ceilingManager = "bench-ceiling"
)

// ceilingLabels mark the ceiling's objects (and keep them out of the
// agent's label selector).
var ceilingLabels = map[string]string{"bench.driftwatch.io/set": "ceiling"}

// runCeiling applies every object of w into the ceiling's namespaces and
// returns how long it took, first request to last response.
func runCeiling(ctx context.Context, kube kubernetes.Interface, w *workload, retries *atomic.Int64) (time.Duration, error) {
	return applyCeilingSet(ctx, kube, w, ceilingPrefix, ceilingLabels, nil, retries)
}

// applyCeilingSet applies every object of w, with these labels and
// annotations, into the namespaces of prefix.
func applyCeilingSet(ctx context.Context, kube kubernetes.Interface, w *workload, prefix string, labels, annotations map[string]string,
	retries *atomic.Int64) (time.Duration, error) {
	var jobs []func(context.Context) error
	for i := 0; i < w.configMaps; i++ {
		ns := nsName(prefix, w.nsOfCM(i))
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := kube.CoreV1().ConfigMaps(ns).Apply(ctx, cmApply(cmName(i), ns, cmValue(i), labels).WithAnnotations(annotations),
				metav1.ApplyOptions{FieldManager: ceilingManager, Force: true})
			return err
		})
	}
	for d := 0; d < w.deployments; d++ {
		ns := nsName(prefix, w.nsOfDep(d))
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := kube.AppsV1().Deployments(ns).Apply(ctx, depApply(d, ns).WithLabels(labels).WithAnnotations(annotations),
				metav1.ApplyOptions{FieldManager: ceilingManager, Force: true})
			return err
		})
	}
	return parallel(ctx, ceilingWorkers, jobs, retries)
}

// The attribution runs (issue 25): the ceiling's objects again, first with
// the metadata the agent adds to each object — two labels and two
// annotations of the same sizes (an ApplySet part-of label, the Bundle's
// label, its exact name and the applied-content hash), under keys the
// agent does not select — then the same with a metadata-only informer
// watching them, as the agent's does. The control plane's CPU of each,
// beside the ceiling's and the agent's sync, says what the agent's extra
// CPU per object is made of.
const (
	ceilingMetaPrefix    = "cmeta"
	ceilingWatchedPrefix = "cwatch"
)

// agentLikeMetadata returns the labels and annotations of an agent-owned
// object, as many and sized as the agent's, under the bench's keys; the
// Bundle label's key names the set (the watcher selects it, as the
// agent's informers select driftwatch.io/bundle).
func agentLikeMetadata(set string) (labels, annotations map[string]string) {
	labels = map[string]string{
		"bench.driftwatch.io/part-of": "applyset-" + strings.Repeat("x", 43) + "-v1",
		setLabel(set):                 "dw-03.bundle-03-002",
	}
	annotations = map[string]string{
		"bench.driftwatch.io/bundle":       "dw-03/bundle-03-002",
		"bench.driftwatch.io/applied-hash": strings.Repeat("0123456789abcdef", 2),
	}
	return labels, annotations
}

func setLabel(set string) string { return "bench.driftwatch.io/" + set }

// runCeilingAttribution applies w with the agent's metadata, unwatched and
// then watched, and returns the two runs' figures.
func runCeilingAttribution(ctx context.Context, kube kubernetes.Interface, meta metadata.Interface, pids []int, w *workload,
	retries *atomic.Int64) (plain, watched attributionRun, err error) {
	labels, annotations := agentLikeMetadata(ceilingMetaPrefix)
	mark := markCPU(pids)
	d, err := applyCeilingSet(ctx, kube, w, ceilingMetaPrefix, labels, annotations, retries)
	if err != nil {
		return plain, watched, fmt.Errorf("ceiling with the agent's metadata: %w", err)
	}
	plain = attributionRun{Seconds: d.Seconds(), CPU: mark.since(0)}

	labels, annotations = agentLikeMetadata(ceilingWatchedPrefix)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	factory := metadatainformer.NewFilteredSharedInformerFactory(meta, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = setLabel(ceilingWatchedPrefix)
	})
	var seen atomic.Int64
	for _, gvr := range []schema.GroupVersionResource{cmGVR, deploymentGVR} {
		inf := factory.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { seen.Add(1) }, UpdateFunc: func(any, any) { seen.Add(1) },
		}); err != nil {
			return plain, watched, err
		}
	}
	factory.Start(wctx.Done())
	factory.WaitForCacheSync(wctx.Done())
	mark = markCPU(pids)
	if d, err = applyCeilingSet(ctx, kube, w, ceilingWatchedPrefix, labels, annotations, retries); err != nil {
		return plain, watched, fmt.Errorf("ceiling with the agent's metadata, watched: %w", err)
	}
	// Every object's event delivered, so that the watch's cost is in.
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return seen.Load() >= int64(w.objects()), nil
	})
	if err != nil {
		return plain, watched, fmt.Errorf("the watcher saw %d of %d objects: %w", seen.Load(), w.objects(), err)
	}
	watched = attributionRun{Seconds: d.Seconds(), CPU: mark.since(0)}
	stop()
	factory.Shutdown()
	return plain, watched, nil
}

// attributionRun is one attribution run's figures.
type attributionRun struct {
	Seconds float64 `json:"seconds"`
	CPU     cpuUse  `json:"cpu"`
}

// runCeilingBurst re-applies n of the ceiling's ConfigMaps with a changed
// value — n updates of existing objects, the work of restoring n edited
// objects — and returns how long it took.
func runCeilingBurst(ctx context.Context, kube kubernetes.Interface, w *workload, n int, retries *atomic.Int64) (time.Duration, error) {
	var jobs []func(context.Context) error
	for i := 0; i < min(n, w.configMaps); i++ {
		ns := nsName(ceilingPrefix, w.nsOfCM(i))
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := kube.CoreV1().ConfigMaps(ns).Apply(ctx, cmApply(cmName(i), ns, cmValue(i)+"-b", ceilingLabels),
				metav1.ApplyOptions{FieldManager: ceilingManager, Force: true})
			return err
		})
	}
	return parallel(ctx, ceilingWorkers, jobs, retries)
}

// parallel runs jobs on the given number of workers and returns the time
// from the first start to the last end; the first error stops the rest. A
// job that fails on a broken connection (see broken) is run again, at
// most twice, and counted in retries (which may be nil): jobs must be
// idempotent.
func parallel(parent context.Context, workers int, jobs []func(context.Context) error, retries *atomic.Int64) (time.Duration, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	next := make(chan func(context.Context) error)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range next {
				err := job(ctx)
				for try := 0; try < 2 && broken(ctx, err); try++ {
					if retries != nil {
						retries.Add(1)
					}
					err = job(ctx)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					cancel()
				}
			}
		}()
	}
feed:
	for _, job := range jobs {
		select {
		case next <- job:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		return 0, fmt.Errorf("%d of %d requests failed, the first: %w", len(errs), len(jobs), errs[0])
	}
	if err := parent.Err(); err != nil {
		return 0, err
	}
	return elapsed, nil
}

// broken reports whether a request failed for want of a connection (reset,
// cut off), not with an answer of the API server: such a request may or
// may not have taken effect.
func broken(ctx context.Context, err error) bool {
	var status apierrors.APIStatus
	return err != nil && ctx.Err() == nil && !errors.As(err, &status)
}
