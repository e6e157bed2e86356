package main

// Baseline "ceiling": what the API server can take — raw parallel
// server-side apply with client-go, 32 workers, no client-side throttling,
// of the same objects into fresh namespaces.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
	var jobs []func(context.Context) error
	for i := 0; i < w.configMaps; i++ {
		ns := nsName(ceilingPrefix, w.nsOfCM(i))
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := kube.CoreV1().ConfigMaps(ns).Apply(ctx, cmApply(cmName(i), ns, cmValue(i), ceilingLabels),
				metav1.ApplyOptions{FieldManager: ceilingManager, Force: true})
			return err
		})
	}
	for d := 0; d < w.deployments; d++ {
		ns := nsName(ceilingPrefix, w.nsOfDep(d))
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := kube.AppsV1().Deployments(ns).Apply(ctx, depApply(d, ns).WithLabels(ceilingLabels),
				metav1.ApplyOptions{FieldManager: ceilingManager, Force: true})
			return err
		})
	}
	return parallel(ctx, ceilingWorkers, jobs, retries)
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
