// Command bench measures the driftwatch agent — built from this checkout and
// run as a separate process on a local control plane of its own — beside
// baselines measured in the same run:
//
//   - ceiling: raw parallel server-side apply with client-go (ceiling.go);
//   - kubectl: kubectl apply --server-side of the same manifests (kubectl.go);
//   - floor: the least a watch-driven agent can do, a reference loop inside
//     the benchmark (floor.go);
//   - stock cache: a stock informer over the agent's objects, in a process
//     of its own (stockcache.go).
//
// Figures: initial sync, writes during a re-sync of unchanged Bundles, edit
// → reverted (edits.go, observer.go), a burst of edits, memory, and the
// agent's API requests while idle (audit.go), for one object count or a
// sweep of counts with a fresh control plane each. Output: a table on
// stdout, a JSON file and an SVG chart (report.go, chart.go).
//
// The run fails (exit 1) when a figure cannot be measured or a correctness
// check fails (the sync never completes, an edit is never reverted, a
// re-sync of unchanged Bundles writes); missed performance targets are only
// reported.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// options are the benchmark's flags.
type options struct {
	objects      int
	deployments  int
	namespaces   int
	perBundle    int
	edits        int
	editInterval time.Duration
	burst        int
	floorObjects int
	idleWindow   time.Duration
	idle         time.Duration
	settle       time.Duration
	sweep        string
	sweepBudget  time.Duration
	out          string
	agentBin     string
	heapProfile  string
	agentEnv     string
	keep         bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == stockCacheFlag {
		os.Exit(stockCacheChild(os.Args[2:]))
	}
	var o options
	flag.IntVar(&o.objects, "objects", 10000, "ConfigMaps the agent owns (besides the Deployments)")
	flag.IntVar(&o.deployments, "deployments", 100, "Deployments the agent owns")
	flag.IntVar(&o.namespaces, "namespaces", 10, "namespaces the objects are spread over")
	flag.IntVar(&o.perBundle, "per-bundle", 1000, "at most this many ConfigMaps per Bundle (Bundles of 1,000, 500, 250 and 100 by namespace)")
	flag.IntVar(&o.edits, "edits", 300, "out-of-band edits of the agent's objects to time, and as many of the floor's")
	flag.DurationVar(&o.editInterval, "edit-interval", 50*time.Millisecond, "one edit every interval (each waits for the previous one's restoration)")
	flag.IntVar(&o.burst, "burst", 1000, "ConfigMaps edited at once")
	flag.IntVar(&o.floorObjects, "floor-objects", 1000, "ConfigMaps of the floor's reference loop")
	flag.DurationVar(&o.idleWindow, "idle-window", 10*time.Minute, "window in which the idle agent's API requests are counted; memory at its end is the steady state")
	flag.DurationVar(&o.settle, "settle-timeout", 15*time.Minute, "before the idle window, wait at most this long for the agent to stop writing (status, events of the corrections)")
	flag.DurationVar(&o.idle, "idle", 0, "after the edits, leave the agent idle this long before the idle window")
	flag.StringVar(&o.sweep, "sweep", "", `comma-separated ConfigMap counts, one fresh control plane each (e.g. "1000,5000,10000,20000,50000"); replaces -objects`)
	flag.DurationVar(&o.sweepBudget, "sweep-budget", 4*time.Hour, "stop the sweep before a size that would not finish within this time from the start")
	flag.StringVar(&o.out, "out", "bin/bench", "output prefix: PREFIX.json and PREFIX.svg")
	flag.StringVar(&o.agentBin, "agent", "bin/driftwatch", "the driftwatch binary")
	flag.StringVar(&o.heapProfile, "heap-profile", "", "write the agent's heap profile at steady state to this file")
	flag.StringVar(&o.agentEnv, "agent-env", "", "extra environment of the agent, comma-separated K=V (e.g. GOMEMLIMIT=48MiB)")
	flag.BoolVar(&o.keep, "keep", false, "keep the control plane's directory and the work files (kept anyway when a run fails)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, o options) int {
	sizes := []int{o.objects}
	if o.sweep != "" {
		sizes = nil
		for _, s := range strings.Split(o.sweep, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				fmt.Fprintf(os.Stderr, "bench: -sweep: %q is not a positive count\n", s)
				return 2
			}
			sizes = append(sizes, n)
		}
	}
	if _, err := os.Stat(o.agentBin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: the agent binary: %v (make build)\n", err)
		return 2
	}
	rep := &report{Started: time.Now(), GoVersion: runtime.Version(), Commit: commit(), JSONPath: o.out + ".json"}
	flag.Visit(func(f *flag.Flag) { rep.Flags = append(rep.Flags, "-"+f.Name+"="+f.Value.String()) })
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	failed := false
	for i, n := range sizes {
		if i > 0 {
			if why := sweepStops(rep, n, o); why != "" {
				rep.SweepNote = fmt.Sprintf("sweep stopped before %s ConfigMaps: %s", thousands(n), why)
				fmt.Fprintln(os.Stderr, "bench:", rep.SweepNote)
				break
			}
		}
		r, err := runSize(ctx, o, n)
		if err != nil {
			failed = true
			r.Failures = append(r.Failures, err.Error())
			fmt.Fprintf(os.Stderr, "bench: %s ConfigMaps: %v\n", thousands(n), err)
		}
		if len(r.Failures) > 0 {
			failed = true
		}
		rep.Runs = append(rep.Runs, r)
		printRun(os.Stdout, r)
		if err != nil {
			if len(sizes) > 1 {
				rep.SweepNote = fmt.Sprintf("sweep stopped at %s ConfigMaps: %v", thousands(n), err)
			}
			break
		}
	}
	if len(rep.Runs) > 1 {
		t, steps := sweepTarget(rep.Runs)
		rep.Sweep, rep.SweepSteps = &t, steps
		printSweep(os.Stdout, rep)
	} else if rep.SweepNote != "" {
		fmt.Println(rep.SweepNote)
	}
	if last := rep.Runs[len(rep.Runs)-1]; len(last.agentLat) > 0 {
		shows, err := writeChart(o.out+".svg", rep)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: chart:", err)
			failed = true
		}
		for _, s := range shows {
			rep.Charts = append(rep.Charts, o.out+".svg: "+s)
		}
	}
	if err := rep.writeJSON(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		failed = true
	}
	fmt.Printf("\nJSON: %s\n", rep.JSONPath)
	for _, c := range rep.Charts {
		fmt.Printf("SVG: %s\n", c)
	}
	fmt.Printf("commit %s, %s, %d CPUs, %s in all\n", rep.Commit, rep.GoVersion, runtime.NumCPU(), time.Since(rep.Started).Round(time.Second))
	if failed {
		fmt.Println("FAILED: a figure could not be measured or a correctness check failed (see above)")
		return 1
	}
	return 0
}

// sweepStops says why the sweep cannot go on to n ConfigMaps: the time
// budget or the memory available would run out, extrapolating linearly
// from the previous size.
func sweepStops(rep *report, n int, o options) string {
	prev := rep.Runs[len(rep.Runs)-1]
	scale := float64(n) / float64(prev.ConfigMaps)
	fixed := o.idleWindow.Seconds() + o.idle.Seconds() + prev.Burst.LastWriteSeconds
	need := time.Duration(((prev.ElapsedSeconds-fixed)*scale + fixed) * float64(time.Second))
	if spent := time.Since(rep.Started); spent+need > o.sweepBudget {
		return fmt.Sprintf("it would take about %s more, beyond -sweep-budget %s (%s spent)", need.Round(time.Second), o.sweepBudget, spent.Round(time.Second))
	}
	avail, err := memAvailable()
	if err != nil {
		return "cannot read the memory available: " + err.Error()
	}
	if want := prev.PeakRSS * scale * 1.25; want > avail {
		return fmt.Sprintf("it would need about %s of memory, %s available", mib(want), mib(avail))
	}
	return ""
}

// runSize measures everything at one ConfigMap count, on a fresh control
// plane. The result holds what was measured even when err is set.
func runSize(ctx context.Context, o options, cms int) (r *runResult, err error) {
	start := time.Now()
	w := newWorkload(cms, o.deployments, o.namespaces, o.perBundle)
	r = &runResult{ConfigMaps: cms, Deployments: o.deployments, Objects: w.objects(), Bundles: w.size(), Namespaces: o.namespaces}
	defer func() { r.ElapsedSeconds = time.Since(start).Seconds() }()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: %s ", time.Now().Format("15:04:05"))
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
	logf("%s ConfigMaps + %d Deployments in %d Bundles: starting a control plane", thousands(cms), o.deployments, w.size())
	e, err := startEnv(ctx, w, os.Stderr)
	if err != nil {
		return r, err
	}
	defer func() { e.stop(o.keep || err != nil || len(r.Failures) > 0) }()
	timeout := 5*time.Minute + time.Duration(w.objects())*20*time.Millisecond

	// Baselines first, while nothing else runs.
	logf("ceiling: server-side apply of %s objects, %d workers", thousands(w.objects()), ceilingWorkers)
	var retries atomic.Int64
	defer func() { r.RetriedRequests = int(retries.Load()) }()
	d, err := runCeiling(ctx, e.kube, w, &retries)
	if err != nil {
		return r, fmt.Errorf("ceiling: %w", err)
	}
	r.Ceiling = ceilingFigures{Workers: ceilingWorkers, Seconds: d.Seconds(), ObjectsPerSecond: float64(w.objects()) / d.Seconds()}
	r.Ceiling.BurstObjects = min(o.burst, cms)
	if d, err = runCeilingBurst(ctx, e.kube, w, r.Ceiling.BurstObjects, &retries); err != nil {
		return r, fmt.Errorf("ceiling burst: %w", err)
	}
	r.Ceiling.BurstSeconds = d.Seconds()
	logf("kubectl apply --server-side of %s objects", thousands(w.objects()))
	k, err := runKubectl(ctx, e.c, w, e.dir)
	if err != nil {
		return r, err
	}
	r.Kubectl = kubectlFigures{Seconds: k.elapsed.Seconds(), ObjectsPerSecond: float64(w.objects()) / k.elapsed.Seconds(), CPUSeconds: k.cpu.Seconds()}
	if err := e.waitDeploymentsSettled(ctx, timeout); err != nil {
		return r, err
	}

	// 1. Initial sync.
	a, err := startAgent(e.c, o.agentBin, filepath.Join(e.c.Dir, "logs", "driftwatch.log"), o.agentEnv)
	if err != nil {
		return r, err
	}
	defer a.stop()
	if err := a.waitReady(ctx); err != nil {
		return r, fmt.Errorf("agent not ready: %w", err)
	}
	bw, err := newBundleWatch(ctx, e.dyn, w)
	if err != nil {
		return r, err
	}
	defer bw.close()
	logf("initial sync")
	cpu0, err := a.cpu()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := createBundles(ctx, e.dyn, w); err != nil {
		return r, err
	}
	t1, err := bw.waitSynced(ctx, a, timeout)
	if err != nil {
		return r, fmt.Errorf("initial sync: %w", err)
	}
	cpu1, err := a.cpu()
	if err != nil {
		return r, err
	}
	sync := t1.Sub(t0).Seconds()
	r.Sync = syncFigures{Seconds: sync, ObjectsPerSecond: float64(w.objects()) / sync, AgentCPUSeconds: cpu1 - cpu0}
	r.Sync.RatioToCeiling = r.Sync.ObjectsPerSecond / r.Ceiling.ObjectsPerSecond
	r.Sync.RatioToKubectl = r.Sync.ObjectsPerSecond / r.Kubectl.ObjectsPerSecond
	if r.Memory.AfterSync, err = a.memory(); err != nil {
		return r, err
	}
	logf("synced in %.1f s; agent: %s", sync, a.memBreakdown())

	// The stock caches, each in a process of its own.
	logf("stock caches")
	if r.Memory.StockDynamic, err = measureStockCache(ctx, e.c.Kubeconfig(cluster.AdminUser), "dynamic"); err != nil {
		return r, err
	}
	if r.Memory.StockMetadata, err = measureStockCache(ctx, e.c.Kubeconfig(cluster.AdminUser), "metadata"); err != nil {
		return r, err
	}

	// Writes during a re-sync of unchanged Bundles.
	logf("re-sync of %d unchanged Bundles", w.size())
	off, err := e.audit.offset()
	if err != nil {
		return r, err
	}
	t0 = time.Now()
	if err := touchBundles(ctx, e.dyn, w); err != nil {
		return r, err
	}
	if t1, err = bw.waitSynced(ctx, a, timeout); err != nil {
		return r, fmt.Errorf("re-sync: %w", err)
	}
	req, err := e.audit.count(ctx, off, agentUser, t0, t1)
	if err != nil {
		return r, err
	}
	r.Resync = resyncFigures{Bundles: w.size(), Seconds: t1.Sub(t0).Seconds(), StatusWrites: writesTo(req, "bundles/status"),
		EventWrites: writesTo(req, "events"), Requests: req}
	r.Resync.ObjectWrites = req.Writes - r.Resync.StatusWrites - r.Resync.EventWrites
	if r.Resync.ObjectWrites != 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("a re-sync of unchanged Bundles wrote %d times to objects: %s", r.Resync.ObjectWrites, req.summary()))
	}

	// 2. Edit → reverted, the agent's and the floor's edits interleaved.
	logf("floor: %d ConfigMaps", o.floorObjects)
	fl, err := newFloor(ctx, e.kube, e.meta, o.floorObjects, &retries)
	if err != nil {
		return r, err
	}
	if err := fl.start(ctx); err != nil {
		return r, err
	}
	defer fl.close()
	obs, err := startObserver(ctx, e.kube)
	if err != nil {
		return r, err
	}
	defer obs.close()
	agentPlan, used := planEdits(w, o.edits)
	logf("edits: %d of the agent's objects and %d of the floor's, one every %s", len(agentPlan), o.edits, o.editInterval)
	var dropped int
	r.agentLat, r.floorLat, dropped, err = runEdits(ctx, e.kube, obs, agentPlan, planFloorEdits(fl, o.edits), o.editInterval)
	if ferr := fl.failure(); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		return r, err
	}
	if dropped > o.edits/10 {
		return r, fmt.Errorf("%d of %d edits dropped on broken connections: too few left to measure", dropped, 2*o.edits)
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
	r.Edits.RatioP50 = r.Edits.Agent.P50 / r.Edits.Floor.P50
	r.Edits.RatioP99 = r.Edits.Agent.P99 / r.Edits.Floor.P99

	// 3. Burst.
	if off, err = e.audit.offset(); err != nil {
		return r, err
	}
	r.Burst.Objects = min(o.burst, cms-len(used))
	logf("burst: %d ConfigMaps at once", r.Burst.Objects)
	burstStart := time.Now()
	if d, err = runBurst(ctx, e.kube, obs, w, r.Burst.Objects, used, &retries); err != nil {
		return r, err
	}
	r.Burst.Seconds, r.Burst.CeilingSeconds = d.Seconds(), r.Ceiling.BurstSeconds
	if r.Burst.Objects != r.Ceiling.BurstObjects {
		// Compare like with like: the ceiling's time scaled to the burst.
		r.Burst.CeilingSeconds *= float64(r.Burst.Objects) / float64(r.Ceiling.BurstObjects)
	}
	r.Burst.Ratio = r.Burst.Seconds / r.Burst.CeilingSeconds
	obs.close()
	fl.close()

	// Every Bundle back in sync, every rollout the edits started done.
	if _, err := bw.waitSynced(ctx, a, timeout); err != nil {
		return r, fmt.Errorf("after the edits: %w", err)
	}
	if err := e.waitDeploymentsSettled(ctx, timeout); err != nil {
		return r, err
	}
	if r.Memory.AfterEdits, err = a.memory(); err != nil {
		return r, err
	}

	// 5. Idle traffic; 4. memory at its end.
	if o.idle > 0 {
		logf("idle %s", o.idle)
		if err := idleFor(ctx, a, o.idle); err != nil {
			return r, err
		}
	}
	// The window starts once the agent has finished reporting the edits
	// (status, events): idle means nothing happens, not nothing new.
	lastWrite, err := e.audit.waitQuiet(ctx, off, agentUser, burstStart, 2*time.Second, o.settle)
	if err != nil {
		logf("%v; starting the idle window anyway", err)
		r.Burst.StillWriting = true
	}
	r.Burst.LastWriteSeconds = lastWrite.Sub(burstStart).Seconds()
	logf("idle window %s (the agent's last write came %.1f s after the burst began)", o.idleWindow, r.Burst.LastWriteSeconds)
	if off, err = e.audit.offset(); err != nil {
		return r, err
	}
	t0 = time.Now()
	if err := idleFor(ctx, a, o.idleWindow); err != nil {
		return r, err
	}
	t1 = time.Now()
	if r.Idle.Requests, err = e.audit.count(ctx, off, agentUser, t0, t1); err != nil {
		return r, err
	}
	r.Idle.WindowSeconds = t1.Sub(t0).Seconds()
	if r.Memory.Steady, err = a.memory(); err != nil {
		return r, err
	}
	r.Memory.SteadyAt = "end of the idle window"
	logf("steady state: %s", a.memBreakdown())
	if o.heapProfile != "" {
		if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", a.metricsPort), o.heapProfile); err != nil {
			return r, err
		}
	}
	r.Memory.RSSPerObject = r.Memory.Steady.RSS / float64(w.objects())
	r.Memory.HeapPerObject = r.Memory.Steady.Heap / float64(w.objects())
	r.Memory.RatioToDynamic = r.Memory.Steady.RSS / r.Memory.StockDynamic.RSS
	r.Memory.RatioToMeta = r.Memory.Steady.RSS / r.Memory.StockMetadata.RSS
	r.PeakRSS = peakRSS(append(e.c.Pids(), a.cmd.Process.Pid))
	r.evaluate()
	return r, nil
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

// memAvailable reads MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (float64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}

// commit is the VCS revision the benchmark was built from.
func commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	return rev + dirty
}
