package main

// Edit → reverted: out-of-band edits one at a time at a fixed rate, the
// agent's objects and the floor's interleaved, each timed from the edit's
// API response until the benchmark's watch sees the object restored; and
// the burst: many ConfigMaps edited at once, timed from the first edit
// until the last is restored.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// editKind is one kind of out-of-band edit.
type editKind string

const (
	editCMPatch  editKind = "configmap-patch"
	editScale    editKind = "deployment-scale"
	editImage    editKind = "deployment-image"
	editCMDelete editKind = "configmap-delete"
)

// editManager is the field manager of every edit.
const editManager = "bench-edit"

// restoreTimeout bounds one restoration; missing it fails the run.
const restoreTimeout = 30 * time.Second

// edit is one planned edit of one object.
type edit struct {
	kind      editKind
	key       objKey
	value     string // the ConfigMap's declared value
	namespace string
}

// planEdits spreads n edits of the agent's objects over its ConfigMaps
// (stepping by a prime, so over namespaces and Bundles) and Deployments
// (round-robin over namespaces), cycling through the four kinds. No object
// is edited twice the same way, so no edit can look like a fight. It also
// returns the ConfigMaps it used.
func planEdits(w *workload, n int) ([]edit, map[int]bool) {
	used := map[int]bool{}
	next := 0
	nextCM := func() int {
		for {
			i := (next * 7919) % w.configMaps
			next++
			if !used[i] || len(used) >= w.configMaps {
				used[i] = true
				return i
			}
		}
	}
	var plan []edit
	scaled, imaged := 0, 0
	for k := 0; k < n; k++ {
		kind := []editKind{editCMPatch, editScale, editImage, editCMDelete}[k%4]
		switch {
		case kind == editScale && scaled < w.deployments:
			d := scaled
			scaled++
			ns := nsName(agentPrefix, w.nsOfDep(d))
			plan = append(plan, edit{kind: kind, key: objKey{"Deployment", ns, depName(d)}, namespace: ns})
			continue
		case kind == editImage && imaged < w.deployments:
			// From the other end, so that scales and image edits meet
			// different Deployments first.
			d := w.deployments - 1 - imaged
			imaged++
			ns := nsName(agentPrefix, w.nsOfDep(d))
			plan = append(plan, edit{kind: kind, key: objKey{"Deployment", ns, depName(d)}, namespace: ns})
			continue
		case kind != editCMDelete:
			kind = editCMPatch
		}
		i := nextCM()
		ns := nsName(agentPrefix, w.nsOfCM(i))
		plan = append(plan, edit{kind: kind, key: objKey{"ConfigMap", ns, cmName(i)}, value: cmValue(i), namespace: ns})
	}
	return plan, used
}

// planFloorEdits alternates patches and deletes over the floor's
// ConfigMaps; with Deployments of its own, it cycles through the four
// kinds as planEdits does (each Deployment scaled and re-imaged in turn).
func planFloorEdits(f *floor, n int) []edit {
	var plan []edit
	deps := 0
	for k := 0; k < n; k++ {
		i := (k * 7919) % f.n
		kind := []editKind{editCMPatch, editCMDelete}[k%2]
		if f.deployments > 0 {
			kind = []editKind{editCMPatch, editScale, editImage, editCMDelete}[k%4]
		}
		if kind == editScale || kind == editImage {
			d := (deps / 2) % f.deployments
			deps++
			plan = append(plan, edit{kind: kind, key: objKey{"Deployment", floorNS, depName(d)}, namespace: floorNS})
			continue
		}
		plan = append(plan, edit{kind: kind, key: objKey{"ConfigMap", floorNS, floorName(i)}, value: floorValue(i), namespace: floorNS})
	}
	return plan
}

// do makes the edit and returns when its API response arrived; the waiter
// is registered first, so the edit's own event is never missed.
func (e edit) do(ctx context.Context, kube kubernetes.Interface, obs *observer, seq int) (*waiter, time.Time, error) {
	var w *waiter
	var err error
	switch e.kind {
	case editCMPatch:
		edited := fmt.Sprintf("edited-%d", seq)
		w = obs.expect(e.key, cmValueIs(edited), cmValueIs(e.value))
		_, err = kube.CoreV1().ConfigMaps(e.namespace).Patch(ctx, e.key.name, types.MergePatchType,
			fmt.Appendf(nil, `{"data":{"key":%q}}`, edited), metav1.PatchOptions{FieldManager: editManager})
	case editCMDelete:
		w = obs.expect(e.key, isDeleted, exists)
		err = kube.CoreV1().ConfigMaps(e.namespace).Delete(ctx, e.key.name, metav1.DeleteOptions{})
	case editScale:
		w = obs.expect(e.key, replicasAre(editReplicas), replicasAre(replicas))
		scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: e.key.name, Namespace: e.namespace},
			Spec: autoscalingv1.ScaleSpec{Replicas: editReplicas}}
		_, err = kube.AppsV1().Deployments(e.namespace).UpdateScale(ctx, e.key.name, scale, metav1.UpdateOptions{FieldManager: editManager})
	case editImage:
		w = obs.expect(e.key, imageIs(imageV2), imageIs(imageV1))
		_, err = kube.AppsV1().Deployments(e.namespace).Patch(ctx, e.key.name, types.StrategicMergePatchType,
			fmt.Appendf(nil, `{"spec":{"template":{"spec":{"containers":[{"name":"app","image":%q}]}}}}`, imageV2),
			metav1.PatchOptions{FieldManager: editManager})
	}
	at := time.Now()
	if err != nil {
		obs.forget(e.key, w)
		return nil, at, fmt.Errorf("%s of %s: %w", e.kind, e.key, err)
	}
	return w, at, nil
}

// latency is one timed edit.
type latency struct {
	kind editKind
	d    time.Duration
}

// runEdits makes the agent's and the floor's edits alternately, one every
// interval, each waiting for the previous one's restoration. An edit whose
// request broke off with the connection is dropped (it may or may not
// have happened, so it cannot be timed) and counted.
func runEdits(ctx context.Context, kube kubernetes.Interface, obs *observer, agentPlan, floorPlan []edit, interval time.Duration) (agent, fl []latency, dropped int, err error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for k := 0; k < max(len(agentPlan), len(floorPlan)); k++ {
		for side, plan := range [][]edit{agentPlan, floorPlan} {
			if k >= len(plan) {
				continue
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return nil, nil, dropped, ctx.Err()
			}
			e := plan[k]
			w, at, err := e.do(ctx, kube, obs, 2*k+side)
			if broken(ctx, err) {
				fmt.Fprintf(os.Stderr, "bench: %s edit %d dropped: %v\n", time.Now().Format("15:04:05.000"), k, err)
				dropped++
				continue
			}
			if err != nil {
				return nil, nil, dropped, err
			}
			restored, err := w.wait(ctx, e.key, restoreTimeout)
			if err != nil {
				who := []string{"the agent", "the floor"}[side]
				return nil, nil, dropped, fmt.Errorf("edit %d (%s): %s did not revert it: %w", k, e.kind, who, err)
			}
			l := latency{kind: e.kind, d: max(restored.Sub(at), 0)}
			if side == 0 {
				agent = append(agent, l)
			} else {
				fl = append(fl, l)
			}
		}
	}
	return agent, fl, dropped, nil
}

// runBurst patches n of the agent's ConfigMaps (not in skip) at once with
// 32 workers and returns the time from the first edit until every one was
// seen restored.
func runBurst(ctx context.Context, kube kubernetes.Interface, obs *observer, w *workload, n int, skip map[int]bool, retries *atomic.Int64) (time.Duration, error) {
	type target struct {
		e edit
		w *waiter
	}
	var targets []*target
	for k := 0; len(targets) < n && k < w.configMaps; k++ {
		i := (k*104729 + 13) % w.configMaps
		if skip[i] {
			continue
		}
		ns := nsName(agentPrefix, w.nsOfCM(i))
		targets = append(targets, &target{e: edit{kind: editCMPatch, key: objKey{"ConfigMap", ns, cmName(i)}, value: cmValue(i), namespace: ns}})
	}
	if len(targets) < n {
		return 0, fmt.Errorf("burst: only %d ConfigMaps left that were not edited, %d wanted", len(targets), n)
	}
	jobs := make([]func(context.Context) error, len(targets))
	for j, t := range targets {
		t.w = obs.expect(t.e.key, cmValueIs("burst"), cmValueIs(t.e.value))
		jobs[j] = func(ctx context.Context) error {
			_, err := kube.CoreV1().ConfigMaps(t.e.namespace).Patch(ctx, t.e.key.name, types.MergePatchType,
				[]byte(`{"data":{"key":"burst"}}`), metav1.PatchOptions{FieldManager: editManager})
			return err
		}
	}
	start := time.Now()
	if _, err := parallel(ctx, ceilingWorkers, jobs, retries); err != nil {
		return 0, fmt.Errorf("burst: %w", err)
	}
	var last time.Time
	deadline := time.Now().Add(restoreTimeout + time.Duration(n)*10*time.Millisecond)
	for _, t := range targets {
		at, err := t.w.wait(ctx, t.e.key, time.Until(deadline))
		if err != nil {
			return 0, fmt.Errorf("burst: %w", err)
		}
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(start), nil
}

// quantiles of a set of latencies, in milliseconds.
type quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func quantilesOf(ls []latency, kind editKind) quantiles {
	var ms []float64
	for _, l := range ls {
		if kind == "" || l.kind == kind {
			ms = append(ms, float64(l.d)/float64(time.Millisecond))
		}
	}
	if len(ms) == 0 {
		return quantiles{}
	}
	sort.Float64s(ms)
	q := func(p float64) float64 { return ms[int(p*float64(len(ms)-1)+0.5)] }
	return quantiles{N: len(ms), P50: q(.5), P90: q(.9), P99: q(.99), Max: ms[len(ms)-1]}
}

// samples groups latencies by kind, in milliseconds.
func samples(ls []latency) map[string][]float64 {
	m := map[string][]float64{}
	for _, l := range ls {
		m[string(l.kind)] = append(m[string(l.kind)], float64(l.d.Microseconds())/1000)
	}
	return m
}

// editsAgainstFloor times o.edits edits of the agent's ConfigMaps name(i)
// in ns (i < n, declared data.key value-i), patches and deletes in turn,
// interleaved with as many of a floor of n ConfigMaps, and returns the
// line that reports both (the scenarios helm and kustomize).
func editsAgainstFloor(ctx context.Context, e *env, obs *observer, ns string, n int, name func(int) string, o options) (string, error) {
	var retries atomic.Int64
	f, err := newFloor(ctx, e.kube, e.meta, n, &retries)
	if err != nil {
		return "", err
	}
	if err := f.start(ctx); err != nil {
		return "", err
	}
	defer f.close()
	var plan []edit
	for k := 0; k < o.edits; k++ {
		i := (k * 7919) % n
		kind := editCMPatch
		if k%2 == 1 {
			kind = editCMDelete
		}
		plan = append(plan, edit{kind: kind, key: objKey{"ConfigMap", ns, name(i)}, value: fmt.Sprintf("value-%d", i), namespace: ns})
	}
	agentLat, floorLat, dropped, err := runEdits(ctx, e.kube, obs, plan, planFloorEdits(f, o.edits), o.editInterval)
	if err != nil {
		return "", err
	}
	if err := f.failure(); err != nil {
		return "", err
	}
	aq, fq := quantilesOf(agentLat, ""), quantilesOf(floorLat, "")
	return fmt.Sprintf("  edit → reverted, %d edits (patch, delete): driftwatch p50 %.1f p90 %.1f p99 %.1f max %.1f ms; floor p50 %.1f p90 %.1f p99 %.1f max %.1f ms; p50 %.2f×, p99 %.2f× (%d dropped)",
		aq.N, aq.P50, aq.P90, aq.P99, aq.Max, fq.P50, fq.P90, fq.P99, fq.Max, aq.P50/fq.P50, aq.P99/fq.P99, dropped), nil
}
