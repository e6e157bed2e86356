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
// Figures (run.go, one phase each): initial sync, writes during a re-sync
// of unchanged Bundles, edit → reverted (edits.go, observer.go), a burst of
// edits, memory, and the agent's API requests while idle (audit.go), for
// one object count or a sweep of counts with a fresh control plane each
// (env.go, agentproc.go). Output: a table on stdout, a JSON file and an
// SVG chart (report.go, chart.go).
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
	"syscall"
	"time"
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
	cpuProfile   string
	// apiserverProfile: the API server's CPU profiles of the ceiling and
	// of the initial sync, PREFIX-ceiling.pprof and PREFIX-sync.pprof.
	apiserverProfile string
	agentEnv         string
	keep             bool
	// scenario, fleetAgents and awayEditInterval: upstream mode (upstream.go).
	scenario    string
	fleetAgents int
	// fleetSizes, fleetWindow, fleetChangeShare and fleetReloadShare:
	// -scenario fleet-sim (fleetsim.go).
	fleetSizes                         []int
	fleetWindow                        time.Duration
	fleetChangeShare, fleetReloadShare float64
	fleetSharedConnections             bool
	awayEditInterval                   time.Duration
	// helmObjects and helmRounds: -scenario helm (helm.go).
	helmObjects, helmRounds int
	// preventObjects, preventWrites and preventSteps: -scenario prevent
	// (prevent.go).
	preventObjects, preventWrites int
	preventSteps                  []int
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
	flag.StringVar(&o.cpuProfile, "cpu-profile", "", "write the agent's CPU profiles of the initial sync and of the burst to PREFIX-sync.pprof and PREFIX-burst.pprof")
	flag.StringVar(&o.apiserverProfile, "apiserver-profile", "", "write kube-apiserver's CPU profiles of the ceiling and of the initial sync (same window) to PREFIX-ceiling.pprof and PREFIX-sync.pprof")
	flag.StringVar(&o.agentEnv, "agent-env", "", "extra environment of the agent, comma-separated K=V (e.g. GOMEMLIMIT=48MiB)")
	flag.StringVar(&o.scenario, "scenario", "", "instead of the core benchmark: fleet (agents idle against one upstream: requests and upstream CPU), away (the upstream stopped under a drift load: memory, corrections, status flush; -idle-window is the window) helm (a chart's install against helm install, a correction's requests, edit → reverted) kustomize (a cluster label's writes, edit → reverted) prevent (allowed writes with 0, 10, 100 Bundles guarded by admission policies) or fleet-sim (100, 1,000, 3,000 agents' upstream side in one process: upstream CPU, memory, etcd, requests)")
	flag.IntVar(&o.fleetAgents, "fleet-agents", 20, "agents of -scenario fleet")
	sizes := flag.String("fleet-sizes", "100,1000,3000", "agents of each run of -scenario fleet-sim, one fresh control plane each")
	flag.DurationVar(&o.fleetWindow, "fleet-window", 3*time.Minute, "measurement window of each run of -scenario fleet-sim")
	flag.Float64Var(&o.fleetChangeShare, "fleet-change-share", 0.05, "share of the Bundles changed per minute in -scenario fleet-sim")
	flag.Float64Var(&o.fleetReloadShare, "fleet-reload-share", 0.01, "share of the agents whose credentials are rewritten per minute in -scenario fleet-sim")
	flag.BoolVar(&o.fleetSharedConnections, "fleet-shared-connections", false, "in -scenario fleet-sim, let the agents share client-go's connections (the upstream's memory per connection, by difference)")
	flag.DurationVar(&o.awayEditInterval, "away-edit-interval", time.Second, "one edit every interval in -scenario away")
	flag.IntVar(&o.helmObjects, "helm-objects", 100, "ConfigMaps of the chart of -scenario helm, and of the Kustomize base of -scenario kustomize")
	flag.IntVar(&o.helmRounds, "helm-rounds", 3, "installs by the agent and by helm in -scenario helm, each")
	flag.IntVar(&o.preventObjects, "prevent-objects", 100, "ConfigMaps of each guarded Bundle of -scenario prevent")
	flag.IntVar(&o.preventWrites, "prevent-writes", 300, "allowed writes per step of -scenario prevent, to owned and to unowned objects each")
	steps := flag.String("prevent-steps", "0,10,100", "guarded Bundles at each step of -scenario prevent, growing")
	flag.BoolVar(&o.keep, "keep", false, "keep the control plane's directory and the work files (kept anyway when a run fails)")
	flag.Parse()
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -fleet-sizes %q: want agent counts\n", *sizes)
			os.Exit(2)
		}
		o.fleetSizes = append(o.fleetSizes, n)
	}
	for _, f := range strings.Split(*steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || (len(o.preventSteps) > 0 && n < o.preventSteps[len(o.preventSteps)-1]) {
			fmt.Fprintf(os.Stderr, "bench: -prevent-steps %q: want growing counts, 0 first\n", *steps)
			os.Exit(2)
		}
		o.preventSteps = append(o.preventSteps, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, o options) int {
	if o.scenario != "" {
		scenarios := map[string]func(context.Context, options) error{"fleet": runFleet, "away": runAway, "helm": runHelm, "kustomize": runKustomize, "prevent": runPrevent, "fleet-sim": runFleetSim}
		f, ok := scenarios[o.scenario]
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: -scenario %q: want fleet, fleet-sim, away, helm, kustomize or prevent\n", o.scenario)
			return 2
		}
		if err := f(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}
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
