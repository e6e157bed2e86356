package main

// One object count measured from start to end, on a fresh control plane:
// the baselines, then the agent's initial sync, the stock caches, a re-sync
// of unchanged Bundles, the edits and the burst, and the idle window.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// sizeRun is the state of one object count's measurement.
type sizeRun struct {
	o       options
	w       *workload
	r       *runResult
	e       *env
	a       *agentProc
	bw      *bundleWatch
	timeout time.Duration // for anything that scales with the object count
	retries atomic.Int64  // the benchmark's requests repeated after a broken connection
	burst   time.Time     // when the burst began
	audit   int64         // audit log offset at the burst
}

// runSize measures everything at one ConfigMap count. The result holds
// what was measured even when err is set.
func runSize(ctx context.Context, o options, cms int) (r *runResult, err error) {
	start := time.Now()
	w := newWorkload(cms, o.deployments, o.namespaces, o.perBundle)
	r = &runResult{ConfigMaps: cms, Deployments: o.deployments, Objects: w.objects(), Bundles: w.size(), Namespaces: o.namespaces}
	s := &sizeRun{o: o, w: w, r: r, timeout: 5*time.Minute + time.Duration(w.objects())*20*time.Millisecond}
	defer func() {
		r.ElapsedSeconds = time.Since(start).Seconds()
		r.RetriedRequests = int(s.retries.Load())
	}()
	logf("%s ConfigMaps + %d Deployments in %d Bundles: starting a control plane", thousands(cms), o.deployments, w.size())
	if s.e, err = startEnv(ctx, w, os.Stderr); err != nil {
		return r, err
	}
	defer func() { s.e.stop(o.keep || err != nil || len(r.Failures) > 0) }()
	defer func() {
		if s.bw != nil {
			s.bw.close()
		}
		if s.a != nil {
			s.a.stop()
		}
	}()
	for _, phase := range []func(context.Context) error{
		s.baselines, s.initialSync, s.stockCaches, s.resync, s.edits, s.idle,
	} {
		if err := phase(ctx); err != nil {
			return r, err
		}
	}
	r.PeakRSS = peakRSS(append(s.e.c.Pids(), s.a.cmd.Process.Pid))
	r.evaluate()
	return r, nil
}

// baselines measures the ceiling and kubectl first, while nothing else
// runs, and waits for the controllers to finish with their Deployments.
func (s *sizeRun) baselines(ctx context.Context) error {
	w, r := s.w, s.r
	logf("ceiling: server-side apply of %s objects, %d workers", thousands(w.objects()), ceilingWorkers)
	mark := markCPU(s.e.c.Pids())
	// A window long enough for the initial sync at a third of the ceiling;
	// the rest of it is the idle API server (about 0.02 cores).
	profiled := profileAPIServer(s.e.c, apiserverProfileSeconds(w), profilePath(s.o.apiserverProfile, "ceiling"))
	d, err := runCeiling(ctx, s.e.kube, w, &s.retries)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	if err := profiled(); err != nil {
		return err
	}
	r.Ceiling = ceilingFigures{Workers: ceilingWorkers, Seconds: d.Seconds(), ObjectsPerSecond: float64(w.objects()) / d.Seconds(), CPU: mark.since(0)}
	if r.Ceiling.WithMetadata, r.Ceiling.Watched, err = runCeilingAttribution(ctx, s.e.kube, s.e.meta, s.e.c.Pids(), w, &s.retries); err != nil {
		return err
	}
	r.Ceiling.BurstObjects = min(s.o.burst, w.configMaps)
	if d, err = runCeilingBurst(ctx, s.e.kube, w, r.Ceiling.BurstObjects, &s.retries); err != nil {
		return fmt.Errorf("ceiling burst: %w", err)
	}
	r.Ceiling.BurstSeconds = d.Seconds()
	logf("kubectl apply --server-side of %s objects", thousands(w.objects()))
	k, err := runKubectl(ctx, s.e.c, w, s.e.dir)
	if err != nil {
		return err
	}
	r.Kubectl = kubectlFigures{Seconds: k.elapsed.Seconds(), ObjectsPerSecond: float64(w.objects()) / k.elapsed.Seconds(), CPUSeconds: k.cpu.Seconds()}
	return s.e.waitDeploymentsSettled(ctx, s.timeout)
}

// initialSync starts the agent and times the Bundles from their creation
// until every one is Synced with all its objects ready (figure 1).
func (s *sizeRun) initialSync(ctx context.Context) (err error) {
	r := s.r
	if s.a, err = startAgent(s.e.c, s.o.agentBin, filepath.Join(s.e.c.Dir, "logs", "driftwatch.log"), s.o.agentEnv); err != nil {
		return err
	}
	if err := s.a.waitReady(ctx); err != nil {
		return fmt.Errorf("agent not ready: %w", err)
	}
	if s.bw, err = newBundleWatch(ctx, s.e.dyn, s.w); err != nil {
		return err
	}
	logf("initial sync")
	cpu0, err := s.a.cpu()
	if err != nil {
		return err
	}
	off, err := s.e.audit.offset()
	if err != nil {
		return err
	}
	mark := markCPU(append(s.e.c.Pids(), s.a.cmd.Process.Pid))
	t0 := time.Now()
	// The profile spans the sync at half the ceiling's rate, and some idle.
	profiled := s.a.profileCPU(2*s.r.Ceiling.Seconds+2, profilePath(s.o.cpuProfile, "sync"))
	apiserverProfiled := profileAPIServer(s.e.c, apiserverProfileSeconds(s.w), profilePath(s.o.apiserverProfile, "sync"))
	if err := createBundles(ctx, s.e.dyn, s.w); err != nil {
		return err
	}
	t1, err := s.bw.waitApplied(ctx, s.a, s.timeout)
	if err != nil {
		return fmt.Errorf("initial sync: %w", err)
	}
	syncCPU := mark.since(s.a.cmd.Process.Pid)
	syncReq, err := s.e.audit.count(ctx, off, agentUser, t0, t1)
	if err != nil {
		return err
	}
	t2, err := s.bw.waitSynced(ctx, s.a, s.timeout)
	if err != nil {
		return fmt.Errorf("initial sync, readiness: %w", err)
	}
	if err := profiled(); err != nil {
		return err
	}
	if err := apiserverProfiled(); err != nil {
		return err
	}
	cpu1, err := s.a.cpu()
	if err != nil {
		return err
	}
	sync := t1.Sub(t0).Seconds()
	r.Sync = syncFigures{Seconds: sync, ObjectsPerSecond: float64(s.w.objects()) / sync, AgentCPUSeconds: cpu1 - cpu0,
		ReadySeconds: t2.Sub(t0).Seconds(), CPU: syncCPU, Requests: syncReq}
	r.Sync.RatioToCeiling = r.Sync.ObjectsPerSecond / r.Ceiling.ObjectsPerSecond
	r.Sync.RatioToKubectl = r.Sync.ObjectsPerSecond / r.Kubectl.ObjectsPerSecond
	if r.Memory.AfterSync, err = s.a.memory(); err != nil {
		return err
	}
	logf("synced in %.1f s; agent: %s", sync, s.a.memBreakdown())
	return nil
}

// stockCaches measures the stock informers, each in a process of its own.
func (s *sizeRun) stockCaches(ctx context.Context) (err error) {
	logf("stock caches")
	kubeconfig := s.e.c.Kubeconfig(cluster.AdminUser)
	if s.r.Memory.StockDynamic, err = measureStockCache(ctx, kubeconfig, "dynamic"); err != nil {
		return err
	}
	s.r.Memory.StockMetadata, err = measureStockCache(ctx, kubeconfig, "metadata")
	return err
}

// resync counts the agent's writes while it re-syncs every Bundle
// unchanged; a write to an object is a failure of the run.
func (s *sizeRun) resync(ctx context.Context) error {
	r := s.r
	logf("re-sync of %d unchanged Bundles", s.w.size())
	off, err := s.e.audit.offset()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := touchBundles(ctx, s.e.dyn, s.w); err != nil {
		return err
	}
	t1, err := s.bw.waitSynced(ctx, s.a, s.timeout)
	if err != nil {
		return fmt.Errorf("re-sync: %w", err)
	}
	req, err := s.e.audit.count(ctx, off, agentUser, t0, t1)
	if err != nil {
		return err
	}
	r.Resync = resyncFigures{Bundles: s.w.size(), Seconds: t1.Sub(t0).Seconds(), StatusWrites: writesTo(req, "bundles/status"),
		EventWrites: writesTo(req, "events"), Requests: req}
	r.Resync.ObjectWrites = req.Writes - r.Resync.StatusWrites - r.Resync.EventWrites
	if r.Resync.ObjectWrites != 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("a re-sync of unchanged Bundles wrote %d times to objects: %s", r.Resync.ObjectWrites, req.summary()))
	}
	return nil
}

// edits times edit → reverted for the agent and the floor, interleaved
// (figure 2), then the burst (figure 3), and waits until every Bundle is
// back in sync and every rollout the edits started is done.
func (s *sizeRun) edits(ctx context.Context) error {
	o, r := s.o, s.r
	logf("floor: %d ConfigMaps", o.floorObjects)
	fl, err := newFloor(ctx, s.e.kube, s.e.meta, o.floorObjects, &s.retries)
	if err != nil {
		return err
	}
	if o.deployments > 0 {
		if err := fl.addDeployments(ctx, min(floorDeployments, o.deployments)); err != nil {
			return err
		}
	}
	if err := fl.start(ctx); err != nil {
		return err
	}
	defer fl.close()
	obs, err := startObserver(ctx, s.e.kube)
	if err != nil {
		return err
	}
	defer obs.close()
	agentPlan, used := planEdits(s.w, o.edits)
	logf("edits: %d of the agent's objects and %d of the floor's, one every %s", len(agentPlan), o.edits, o.editInterval)
	var dropped int
	before, err := s.a.correctionTimes()
	if err != nil {
		return err
	}
	r.agentLat, r.floorLat, dropped, err = runEdits(ctx, s.e.kube, obs, agentPlan, planFloorEdits(fl, o.edits), o.editInterval)
	if ferr := fl.failure(); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		return err
	}
	if dropped > o.edits/10 {
		return fmt.Errorf("%d of %d edits dropped on broken connections: too few left to measure", dropped, 2*o.edits)
	}
	r.Edits = editFigures{IntervalMS: float64(o.editInterval) / float64(time.Millisecond), Dropped: dropped,
		Agent: quantilesOf(r.agentLat, ""), Floor: quantilesOf(r.floorLat, ""),
		AgentByKind: map[string]quantiles{}, FloorByKind: map[string]quantiles{}}
	for _, k := range []editKind{editCMPatch, editCMDelete, editScale, editImage} {
		if q := quantilesOf(r.agentLat, k); q.N > 0 {
			r.Edits.AgentByKind[string(k)] = q
		}
		if q := quantilesOf(r.floorLat, k); q.N > 0 {
			r.Edits.FloorByKind[string(k)] = q
		}
	}
	r.Edits.AgentSamples, r.Edits.FloorSamples = samples(r.agentLat), samples(r.floorLat)
	after, err := s.a.correctionTimes()
	if err != nil {
		return err
	}
	r.Edits.Trace = traceEdits(before, after, r.agentLat, r.floorLat, fl)
	r.Edits.RatioP50 = r.Edits.Agent.P50 / r.Edits.Floor.P50
	r.Edits.RatioP99 = r.Edits.Agent.P99 / r.Edits.Floor.P99

	if s.audit, err = s.e.audit.offset(); err != nil {
		return err
	}
	r.Burst.Objects = min(o.burst, s.w.configMaps-len(used))
	logf("burst: %d ConfigMaps at once", r.Burst.Objects)
	s.burst = time.Now()
	profiled := s.a.profileCPU(3*r.Ceiling.BurstSeconds+1, profilePath(o.cpuProfile, "burst"))
	d, err := runBurst(ctx, s.e.kube, obs, s.w, r.Burst.Objects, used, &s.retries)
	if err != nil {
		return err
	}
	if err := profiled(); err != nil {
		return err
	}
	r.Burst.Seconds, r.Burst.CeilingSeconds = d.Seconds(), r.Ceiling.BurstSeconds
	if r.Burst.Objects != r.Ceiling.BurstObjects {
		// Compare like with like: the ceiling's time scaled to the burst.
		r.Burst.CeilingSeconds *= float64(r.Burst.Objects) / float64(r.Ceiling.BurstObjects)
	}
	r.Burst.Ratio = r.Burst.Seconds / r.Burst.CeilingSeconds
	obs.close()
	fl.close()

	if _, err := s.bw.waitSynced(ctx, s.a, s.timeout); err != nil {
		return fmt.Errorf("after the edits: %w", err)
	}
	if err := s.e.waitDeploymentsSettled(ctx, s.timeout); err != nil {
		return err
	}
	r.Memory.AfterEdits, err = s.a.memory()
	return err
}

// idle counts the agent's requests over the idle window (figure 5) and
// takes its memory at the window's end as the steady state (figure 4).
func (s *sizeRun) idle(ctx context.Context) error {
	o, r, a := s.o, s.r, s.a
	if o.idle > 0 {
		logf("idle %s", o.idle)
		if err := idleFor(ctx, a, o.idle); err != nil {
			return err
		}
	}
	// The window starts once the agent has finished reporting the edits
	// (status, events): idle means nothing happens, not nothing new.
	lastWrite, err := s.e.audit.waitQuiet(ctx, s.audit, agentUser, s.burst, 2*time.Second, o.settle)
	if err != nil {
		logf("%v; starting the idle window anyway", err)
		r.Burst.StillWriting = true
	}
	r.Burst.LastWriteSeconds = lastWrite.Sub(s.burst).Seconds()
	logf("idle window %s (the agent's last write came %.1f s after the burst began)", o.idleWindow, r.Burst.LastWriteSeconds)
	off, err := s.e.audit.offset()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := idleFor(ctx, a, o.idleWindow); err != nil {
		return err
	}
	t1 := time.Now()
	if r.Idle.Requests, err = s.e.audit.count(ctx, off, agentUser, t0, t1); err != nil {
		return err
	}
	r.Idle.WindowSeconds = t1.Sub(t0).Seconds()
	if r.Memory.Steady, err = a.memory(); err != nil {
		return err
	}
	r.Memory.SteadyAt = "end of the idle window"
	logf("steady state: %s", a.memBreakdown())
	if o.heapProfile != "" {
		if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", a.metricsPort), o.heapProfile); err != nil {
			return err
		}
	}
	objects := float64(s.w.objects())
	r.Memory.RSSPerObject = r.Memory.Steady.RSS / objects
	r.Memory.HeapPerObject = r.Memory.Steady.Heap / objects
	r.Memory.RatioToDynamic = r.Memory.Steady.RSS / r.Memory.StockDynamic.RSS
	r.Memory.RatioToMeta = r.Memory.Steady.RSS / r.Memory.StockMetadata.RSS
	return nil
}

// logf prints a progress line on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// idleFor lets time pass — a measurement window, not a synchronisation —
// and fails if the agent exits meanwhile.
func idleFor(ctx context.Context, a *agentProc, d time.Duration) error {
	select {
	case <-time.After(d):
		return a.exited()
	case <-a.done:
		return a.exited()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writesTo counts the writes of req to one resource[/subresource].
func writesTo(req requests, resource string) int {
	n := 0
	for k, v := range req.ByVerb {
		if verb, res, _ := strings.Cut(k, " "); res == resource && isWrite(verb) {
			n += v
		}
	}
	return n
}

// peakRSS sums the peak RSS (VmHWM) of processes.
func peakRSS(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		if v, err := procStatus(pid, "VmHWM:"); err == nil {
			total += v
		}
	}
	return total
}

// profilePath names a phase's CPU profile; "" without -cpu-profile.
// floorDeployments is how many Deployments the floor owns (each edited
// several times): the agent's Deployment edits are compared with the same
// edits of the floor's.
const floorDeployments = 20

// correctionSums are the agent's correction histograms' sums and counts.
type correctionSums struct{ handled, handledN, apply, applyN float64 }

// correctionTimes scrapes them.
func (a *agentProc) correctionTimes() (correctionSums, error) {
	var c correctionSums
	for _, m := range []struct {
		name string
		v    *float64
	}{
		{"driftwatch_drift_correction_seconds_sum", &c.handled}, {"driftwatch_drift_correction_seconds_count", &c.handledN},
		{`driftwatch_apply_duration_seconds_sum{result="success"}`, &c.apply}, {`driftwatch_apply_duration_seconds_count{result="success"}`, &c.applyN},
	} {
		v, err := a.scrape(m.name)
		if err != nil {
			return c, err
		}
		*m.v = v
	}
	return c, nil
}

// traceEdits is the edits' mean split into its parts (editTrace).
func traceEdits(before, after correctionSums, agent, floor []latency, fl *floor) editTrace {
	mean := func(ls []latency) float64 {
		var sum time.Duration
		for _, l := range ls {
			sum += l.d
		}
		return float64(sum) / float64(max(len(ls), 1)) / 1e6
	}
	t := editTrace{AgentMeanMS: mean(agent), FloorMeanMS: mean(floor)}
	t.AgentHandledMS = 1000 * (after.handled - before.handled) / max(after.handledN-before.handledN, 1)
	t.AgentApplyMS = 1000 * (after.apply - before.apply) / max(after.applyN-before.applyN, 1)
	t.FloorHandledMS, t.FloorApplyMS = fl.trace()
	return t
}

// apiserverProfileSeconds is the window of the API server's profiles of
// the ceiling and of the initial sync: the same for both, so that their
// samples compare (the idle rest of the window adds about 0.02 cores).
func apiserverProfileSeconds(w *workload) float64 { return 10 + float64(w.objects())/400 }

func profilePath(prefix, phase string) string {
	if prefix == "" {
		return ""
	}
	return prefix + "-" + phase + ".pprof"
}
