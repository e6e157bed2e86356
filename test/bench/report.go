package main

// The figures of a run, the targets they are held to, and the output: a
// table on stdout and every figure with its unit in a JSON file.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// runResult holds every figure of one object count. JSON names carry units.
type runResult struct {
	ConfigMaps  int `json:"configmaps"`
	Deployments int `json:"deployments"`
	Objects     int `json:"objects"`
	Bundles     int `json:"bundles"`
	Namespaces  int `json:"namespaces"`

	Sync    syncFigures    `json:"initial_sync"`
	Ceiling ceilingFigures `json:"ceiling"`
	Kubectl kubectlFigures `json:"kubectl"`
	Resync  resyncFigures  `json:"resync_unchanged"`
	Edits   editFigures    `json:"edit_to_reverted"`
	Burst   burstFigures   `json:"burst"`
	Memory  memoryFigures  `json:"memory"`
	Idle    idleFigures    `json:"idle_traffic"`

	Targets  []target `json:"targets"`
	Failures []string `json:"failures,omitempty"`
	// PeakRSS is the control plane's and the agent's peak RSS together,
	// used to decide whether the next size of a sweep fits in memory.
	PeakRSS float64 `json:"peak_rss_control_plane_and_agent_bytes"`
	// RetriedRequests are the benchmark's own requests repeated after a
	// broken connection (idempotent ones only).
	RetriedRequests int     `json:"bench_requests_retried_after_broken_connection"`
	ElapsedSeconds  float64 `json:"elapsed_seconds"`

	agentLat, floorLat []latency
}

type syncFigures struct {
	Seconds          float64 `json:"seconds"`
	ObjectsPerSecond float64 `json:"objects_per_second"`
	AgentCPUSeconds  float64 `json:"agent_cpu_seconds"`
	// ReadySeconds is until every object is also ready (the Deployments'
	// Pods running): the cluster's controllers, not only the agent.
	ReadySeconds float64 `json:"ready_seconds"`
	// CPU is the machine's CPU use from the Bundles' creation until
	// every object was applied.
	CPU cpuUse `json:"cpu"`
	// Requests are the agent's requests until every object was applied.
	Requests       requests `json:"agent_requests"`
	RatioToCeiling float64  `json:"rate_ratio_to_ceiling"`
	RatioToKubectl float64  `json:"rate_ratio_to_kubectl"`
}

type ceilingFigures struct {
	Workers          int     `json:"workers"`
	Seconds          float64 `json:"seconds"`
	ObjectsPerSecond float64 `json:"objects_per_second"`
	BurstObjects     int     `json:"burst_applies"`
	BurstSeconds     float64 `json:"burst_applies_seconds"`
	CPU              cpuUse  `json:"cpu"`
	// WithMetadata and Watched are the attribution runs (ceiling.go).
	WithMetadata attributionRun `json:"with_agent_metadata"`
	Watched      attributionRun `json:"with_agent_metadata_watched"`
}

type kubectlFigures struct {
	Seconds          float64 `json:"seconds"`
	ObjectsPerSecond float64 `json:"objects_per_second"`
	CPUSeconds       float64 `json:"kubectl_cpu_seconds"`
}

type resyncFigures struct {
	Bundles      int      `json:"bundles"`
	Seconds      float64  `json:"seconds"`
	ObjectWrites int      `json:"object_writes"` // must be 0
	StatusWrites int      `json:"bundle_status_writes"`
	EventWrites  int      `json:"event_writes"`
	Requests     requests `json:"agent_requests"`
}

type editFigures struct {
	IntervalMS  float64              `json:"interval_ms"`
	Dropped     int                  `json:"dropped_on_broken_connection"`
	Agent       quantiles            `json:"driftwatch"`
	AgentByKind map[string]quantiles `json:"driftwatch_by_kind"`
	Floor       quantiles            `json:"floor"`
	FloorByKind map[string]quantiles `json:"floor_by_kind"`
	RatioP50    float64              `json:"p50_ratio_to_floor"`
	RatioP99    float64              `json:"p99_ratio_to_floor"`
	// Samples are every latency in the order of the edits, by kind; 0
	// when the benchmark's watch saw the restoration before the edit's
	// own response arrived.
	AgentSamples map[string][]float64 `json:"driftwatch_samples_ms"`
	FloorSamples map[string][]float64 `json:"floor_samples_ms"`
	Trace        editTrace            `json:"trace"`
}

// editTrace splits the mean edit → reverted into its parts, for the agent
// (its own histograms: drift event received → correction applied, and the
// apply call) and for the floor (the same two, timed in its handler); the
// rest of the mean is the watch's delivery to the corrector and of the
// restored object to the benchmark's observer.
type editTrace struct {
	AgentMeanMS    float64 `json:"driftwatch_mean_ms"`
	AgentHandledMS float64 `json:"driftwatch_event_to_applied_mean_ms"`
	AgentApplyMS   float64 `json:"driftwatch_apply_call_mean_ms"`
	FloorMeanMS    float64 `json:"floor_mean_ms"`
	FloorHandledMS float64 `json:"floor_event_to_applied_mean_ms"`
	FloorApplyMS   float64 `json:"floor_apply_call_mean_ms"`
}

type burstFigures struct {
	Objects        int     `json:"objects"`
	Seconds        float64 `json:"seconds"`
	CeilingSeconds float64 `json:"ceiling_seconds"`
	Ratio          float64 `json:"ratio_to_ceiling"`
	// LastWriteSeconds is when, after the burst began, the agent last
	// wrote anything (corrections, Bundle status, events).
	LastWriteSeconds float64 `json:"agent_last_write_after_burst_seconds"`
	// StillWriting: the agent had not stopped writing when the idle
	// window began (-settle-timeout).
	StillWriting bool `json:"agent_still_writing_at_idle_window"`
}

type memoryFigures struct {
	AfterSync      memory     `json:"after_sync"`
	AfterEdits     memory     `json:"after_edits"`
	Steady         memory     `json:"steady"`
	SteadyAt       string     `json:"steady_measured"`
	RSSPerObject   float64    `json:"rss_bytes_per_object"`
	HeapPerObject  float64    `json:"heap_bytes_per_object"`
	StockDynamic   stockCache `json:"stock_dynamic_informer"`
	StockMetadata  stockCache `json:"stock_metadata_informer"`
	RatioToDynamic float64    `json:"rss_ratio_to_stock_dynamic"`
	RatioToMeta    float64    `json:"rss_ratio_to_stock_metadata"`
}

type idleFigures struct {
	WindowSeconds float64  `json:"window_seconds"`
	Requests      requests `json:"agent_requests"`
}

// target is a goal a figure is held to. Missing one is reported, never a
// failure of the run.
type target struct {
	Name  string `json:"name"`
	Goal  string `json:"goal"`
	Value string `json:"value"`
	Met   bool   `json:"met"`
}

func (t target) verdict() string {
	if t.Met {
		return "met"
	}
	return "missed"
}

// evaluate fills r.Targets.
func (r *runResult) evaluate() {
	idleOK := r.Idle.Requests.Writes == 0 && r.Idle.Requests.List == 0
	r.Targets = []target{
		{"sync rate", "≥ 0.85× ceiling", fmt.Sprintf("%.2f×", r.Sync.RatioToCeiling), r.Sync.RatioToCeiling >= 0.85},
		{"edit → reverted p50", "≤ 1.5× floor", fmt.Sprintf("%.2f×", r.Edits.RatioP50), r.Edits.RatioP50 <= 1.5},
		{"edit → reverted p99", "≤ 3× floor", fmt.Sprintf("%.2f×", r.Edits.RatioP99), r.Edits.RatioP99 <= 3},
		{"RSS at steady state", "≤ 0.6× stock dynamic cache", fmt.Sprintf("%.2f×", r.Memory.RatioToDynamic), r.Memory.RatioToDynamic <= 0.6},
		{"idle API traffic", "0 writes, 0 LISTs", fmt.Sprintf("%d writes, %d LISTs", r.Idle.Requests.Writes, r.Idle.Requests.List), idleOK},
		{"burst restored", "≤ 1.5× ceiling's time", fmt.Sprintf("%.2f×", r.Burst.Ratio), r.Burst.Ratio <= 1.5},
	}
}

// sweepTarget judges RSS per object across sizes by its marginal cost:
// the growth of RSS per added object between consecutive sizes. Plain RSS
// per object falls with size (the binary and runtime are a fixed cost), so
// it cannot show growth; the marginal cost is flat when no step costs more
// than 1.5× the cheapest.
func sweepTarget(rs []*runResult) (target, []float64) {
	var slopes []float64
	for i := 1; i < len(rs); i++ {
		dn := float64(rs[i].ConfigMaps - rs[i-1].ConfigMaps)
		slopes = append(slopes, (rs[i].Memory.Steady.RSS-rs[i-1].Memory.Steady.RSS)/dn)
	}
	t := target{Name: "RSS per object across the sweep", Goal: "flat: marginal B/object within 1.5× of each other"}
	if len(slopes) < 2 {
		t.Value = "fewer than 3 sizes"
		return t, slopes
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range slopes {
		lo, hi = math.Min(lo, s), math.Max(hi, s)
	}
	t.Value = fmt.Sprintf("marginal %.0f–%.0f B/object", lo, hi)
	t.Met = lo > 0 && hi <= 1.5*lo
	return t, slopes
}

// report is everything a benchmark run writes.
type report struct {
	Commit     string       `json:"commit"`
	GoVersion  string       `json:"go_version"`
	Started    time.Time    `json:"started"`
	Flags      []string     `json:"flags"`
	Runs       []*runResult `json:"runs"`
	Sweep      *target      `json:"sweep_target,omitempty"`
	SweepNote  string       `json:"sweep_note,omitempty"`
	Charts     []string     `json:"charts"`
	JSONPath   string       `json:"-"`
	SweepSteps []float64    `json:"sweep_marginal_rss_bytes_per_object,omitempty"`
}

func (rep *report) writeJSON() error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(rep.JSONPath, append(b, '\n'), 0o644)
}

// table prints rows as a Markdown table with aligned columns.
func table(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range r {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func qstr(q quantiles) string {
	if q.N == 0 {
		return "—"
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s ms (%d)", ms(q.P50), ms(q.P90), ms(q.P99), ms(q.Max), q.N)
}

func ms(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// printRun prints one run's figures beside its baselines and targets.
func printRun(w io.Writer, r *runResult) {
	fmt.Fprintf(w, "\n%s ConfigMaps + %d Deployments = %s objects in %d Bundles over %d namespaces\n\n",
		thousands(r.ConfigMaps), r.Deployments, thousands(r.Objects), r.Bundles, r.Namespaces)
	verdict := map[string]string{}
	for _, t := range r.Targets {
		verdict[t.Name] = t.Goal + ": " + t.verdict()
	}
	rows := [][]string{{"figure", "driftwatch", "baseline", "ratio", "target: verdict"}}
	rows = append(rows,
		[]string{"initial sync", fmt.Sprintf("%.1f s, %s objects/s, agent CPU %.1f s; all ready at %.1f s", r.Sync.Seconds, thousands(int(r.Sync.ObjectsPerSecond)), r.Sync.AgentCPUSeconds, r.Sync.ReadySeconds),
			fmt.Sprintf("ceiling %.1f s (%s/s, %d workers); kubectl %.1f s (%s/s)", r.Ceiling.Seconds, thousands(int(r.Ceiling.ObjectsPerSecond)), r.Ceiling.Workers,
				r.Kubectl.Seconds, thousands(int(r.Kubectl.ObjectsPerSecond))),
			fmt.Sprintf("%.2f× ceiling, %.2f× kubectl", r.Sync.RatioToCeiling, r.Sync.RatioToKubectl), verdict["sync rate"]},
		[]string{"  machine CPU while applying", fmt.Sprintf("%.0f %% busy; control plane %.1f s, agent %.1f s", 100*r.Sync.CPU.Busy, r.Sync.CPU.ControlPlaneSeconds, r.Sync.CPU.AgentSeconds),
			fmt.Sprintf("ceiling: %.0f %% busy; control plane %.1f s", 100*r.Ceiling.CPU.Busy, r.Ceiling.CPU.ControlPlaneSeconds),
			fmt.Sprintf("control plane CPU %.2f× the ceiling's", r.Sync.CPU.ControlPlaneSeconds/max(r.Ceiling.CPU.ControlPlaneSeconds, 1e-9)), ""},
		[]string{"  control plane CPU by process", r.Sync.CPU.split(), "ceiling: " + r.Ceiling.CPU.split(), "", ""},
		[]string{"  ceiling with the agent's metadata", "", fmt.Sprintf("%.1f s; control plane %.1f s (%s)", r.Ceiling.WithMetadata.Seconds,
			r.Ceiling.WithMetadata.CPU.ControlPlaneSeconds, r.Ceiling.WithMetadata.CPU.split()),
			fmt.Sprintf("%.2f× the ceiling's CPU", r.Ceiling.WithMetadata.CPU.ControlPlaneSeconds/max(r.Ceiling.CPU.ControlPlaneSeconds, 1e-9)), ""},
		[]string{"  … and watched (metadata informer)", "", fmt.Sprintf("%.1f s; control plane %.1f s (%s)", r.Ceiling.Watched.Seconds,
			r.Ceiling.Watched.CPU.ControlPlaneSeconds, r.Ceiling.Watched.CPU.split()),
			fmt.Sprintf("%.2f× the ceiling's CPU", r.Ceiling.Watched.CPU.ControlPlaneSeconds/max(r.Ceiling.CPU.ControlPlaneSeconds, 1e-9)), ""},
		[]string{"re-sync of unchanged Bundles", fmt.Sprintf("%d writes to objects (%d Bundle status, %d events) in %.1f s", r.Resync.ObjectWrites, r.Resync.StatusWrites, r.Resync.EventWrites, r.Resync.Seconds),
			"", "", "0 writes to objects: " + map[bool]string{true: "ok", false: "FAILED"}[r.Resync.ObjectWrites == 0]},
		[]string{"edit → reverted, all kinds", qstr(r.Edits.Agent), "floor " + qstr(r.Edits.Floor),
			fmt.Sprintf("p50 %.2f×, p99 %.2f×", r.Edits.RatioP50, r.Edits.RatioP99), verdict["edit → reverted p50"] + "; " + verdict["edit → reverted p99"]},
	)
	t := r.Edits.Trace
	rows = append(rows, []string{"  mean, traced", fmt.Sprintf("%.1f ms: event → applied %.1f (apply call %.1f), watch deliveries %.1f", t.AgentMeanMS, t.AgentHandledMS, t.AgentApplyMS, t.AgentMeanMS-t.AgentHandledMS),
		fmt.Sprintf("floor %.1f ms: event → applied %.1f (apply call %.1f), watch deliveries %.1f", t.FloorMeanMS, t.FloorHandledMS, t.FloorApplyMS, t.FloorMeanMS-t.FloorHandledMS),
		fmt.Sprintf("%.2f×", t.AgentMeanMS/max(t.FloorMeanMS, 1e-9)), ""})
	for _, k := range []editKind{editCMPatch, editCMDelete, editScale, editImage} {
		aq, fq := r.Edits.AgentByKind[string(k)], r.Edits.FloorByKind[string(k)]
		base, ratio := "", ""
		if fq.N > 0 && aq.N > 0 {
			base = "floor " + qstr(fq)
			ratio = fmt.Sprintf("p50 %.2f×, p99 %.2f×", aq.P50/fq.P50, aq.P99/fq.P99)
		}
		rows = append(rows, []string{"  " + string(k), qstr(aq), base, ratio, ""})
	}
	rows = append(rows,
		[]string{fmt.Sprintf("burst: %s ConfigMaps edited at once", thousands(r.Burst.Objects)), fmt.Sprintf("all restored %.2f s after the first edit", r.Burst.Seconds),
			fmt.Sprintf("ceiling: %s applies in %.2f s", thousands(r.Ceiling.BurstObjects), r.Burst.CeilingSeconds), fmt.Sprintf("%.2f×", r.Burst.Ratio), verdict["burst restored"]},
		[]string{"  the agent's writes after the burst (status, events)", lastWrite(r.Burst), "", "", ""},
		[]string{"agent memory after the sync", fmt.Sprintf("RSS %s, heap %s", mib(r.Memory.AfterSync.RSS), mib(r.Memory.AfterSync.Heap)), "", "", ""},
		[]string{"agent memory after edits and burst", fmt.Sprintf("RSS %s, heap %s", mib(r.Memory.AfterEdits.RSS), mib(r.Memory.AfterEdits.Heap)), "", "", ""},
		[]string{"agent memory, steady (" + r.Memory.SteadyAt + ")", fmt.Sprintf("RSS %s (anonymous %s), heap %s", mib(r.Memory.Steady.RSS), mib(r.Memory.Steady.Anon), mib(r.Memory.Steady.Heap)),
			fmt.Sprintf("stock dynamic informer RSS %s (anonymous %s), heap %s; metadata-only RSS %s (anonymous %s), heap %s (%s objects each)",
				mib(r.Memory.StockDynamic.RSS), mib(r.Memory.StockDynamic.Anon), mib(r.Memory.StockDynamic.Heap),
				mib(r.Memory.StockMetadata.RSS), mib(r.Memory.StockMetadata.Anon), mib(r.Memory.StockMetadata.Heap), thousands(r.Memory.StockDynamic.Objects)),
			fmt.Sprintf("%.2f× dynamic, %.2f× metadata", r.Memory.RatioToDynamic, r.Memory.RatioToMeta), verdict["RSS at steady state"]},
		[]string{"  per owned object", fmt.Sprintf("RSS %.0f B, heap %.0f B", r.Memory.RSSPerObject, r.Memory.HeapPerObject),
			fmt.Sprintf("dynamic RSS %.0f B, heap %.0f B; metadata RSS %.0f B, heap %.0f B",
				r.Memory.StockDynamic.RSS/float64(r.Objects), r.Memory.StockDynamic.Heap/float64(r.Objects),
				r.Memory.StockMetadata.RSS/float64(r.Objects), r.Memory.StockMetadata.Heap/float64(r.Objects)), "", ""},
		[]string{fmt.Sprintf("idle API traffic over %s", time.Duration(r.Idle.WindowSeconds*float64(time.Second)).Round(time.Second)),
			fmt.Sprintf("GET %d, LIST %d, WATCH %d, writes %d", r.Idle.Requests.Get, r.Idle.Requests.List, r.Idle.Requests.Watch, r.Idle.Requests.Writes),
			"", "", verdict["idle API traffic"]},
	)
	table(w, rows)
	fmt.Fprintf(w, "\nidle requests by verb and resource: %s\n", r.Idle.Requests.summary())
	fmt.Fprintf(w, "initial sync requests by verb and resource: %s\n", r.Sync.Requests.summary())
	fmt.Fprintf(w, "re-sync requests by verb and resource: %s\n", r.Resync.Requests.summary())
	met := 0
	for _, t := range r.Targets {
		if t.Met {
			met++
		}
	}
	if r.RetriedRequests > 0 || r.Edits.Dropped > 0 {
		fmt.Fprintf(w, "broken connections of the benchmark's own client: %d requests retried, %d edits dropped\n", r.RetriedRequests, r.Edits.Dropped)
	}
	fmt.Fprintf(w, "targets: %d of %d met\n", met, len(r.Targets))
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAILED:", f)
	}
}

// printSweep prints one line per size.
func printSweep(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\nsweep\n\n")
	rows := [][]string{{"ConfigMaps", "sync", "× ceiling", "kubectl", "edit p50 / p99 (floor)", "burst (× ceiling)",
		"steady RSS", "RSS / object", "marginal RSS / object", "stock dynamic RSS", "idle LIST / writes"}}
	for i, r := range rep.Runs {
		marginal := "—"
		if i > 0 && i-1 < len(rep.SweepSteps) {
			marginal = fmt.Sprintf("%.0f B", rep.SweepSteps[i-1])
		}
		rows = append(rows, []string{thousands(r.ConfigMaps),
			fmt.Sprintf("%.1f s (%s/s)", r.Sync.Seconds, thousands(int(r.Sync.ObjectsPerSecond))),
			fmt.Sprintf("%.2f", r.Sync.RatioToCeiling), fmt.Sprintf("%.1f s", r.Kubectl.Seconds),
			fmt.Sprintf("%s / %s ms (%s / %s)", ms(r.Edits.Agent.P50), ms(r.Edits.Agent.P99), ms(r.Edits.Floor.P50), ms(r.Edits.Floor.P99)),
			fmt.Sprintf("%.2f s (%.2f)", r.Burst.Seconds, r.Burst.Ratio),
			mib(r.Memory.Steady.RSS), fmt.Sprintf("%.0f B", r.Memory.RSSPerObject), marginal, mib(r.Memory.StockDynamic.RSS),
			fmt.Sprintf("%d / %d", r.Idle.Requests.List, r.Idle.Requests.Writes)})
	}
	table(w, rows)
	if rep.Sweep != nil {
		fmt.Fprintf(w, "%s: %s (%s): %s\n", rep.Sweep.Name, rep.Sweep.Goal, rep.Sweep.Value, rep.Sweep.verdict())
	}
	if rep.SweepNote != "" {
		fmt.Fprintln(w, rep.SweepNote)
	}
}

// thousands formats n with comma separators.
func thousands(n int) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func lastWrite(b burstFigures) string {
	if b.StillWriting {
		return fmt.Sprintf("still writing %.1f s after the burst began (-settle-timeout)", b.LastWriteSeconds)
	}
	return fmt.Sprintf("last write %.1f s after the burst began", b.LastWriteSeconds)
}
