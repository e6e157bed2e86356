package main

// The fleet simulator (issue 25): N agents' upstream side in one process,
// against one upstream control plane, for each N of -fleet-sizes.
//
// Each simulated agent is the agent's own packages composed as the agent
// composes them (commands.agent, newController, runWithSource): a
// clusters.Provider that reads its own source kubeconfig — its own user
// and token, and a CA file of its own bytes, so that client-go's transport
// cache gives it a connection of its own — and keeps it reloaded
// (WatchSource), the heartbeat Lease (Heartbeat), and a drift.Controller
// with the Bundle and BundleRestriction informers of its namespace, status
// writes and events. What the simulation changes: the target cluster is
// shared by all of them (one API server, each agent in a namespace of its
// own, informers selected by its Bundle's label, the target's clients
// shared), Helm is not linked (the Bundles are raw manifests; Helm reads
// nothing upstream but a Bundle's valuesFrom and chart credentials), and
// the agents' logs go to a file.
//
// Per N: upstream API server and etcd CPU, RSS and etcd's database size
// with the agents idle but for a share of Bundles changed per minute (and
// a share of agents whose credentials are rewritten), requests per agent
// per minute by verb (audit log), the time from start to every Bundle
// Ready, heartbeat Leases' age, and the time from a Bundle's change to its
// status reporting it.
//
//	bin/bench -scenario fleet-sim -fleet-sizes 100,1000,3000

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/drift"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/tenancy"
	"github.com/driftwatch/driftwatch/test/cluster"
	"github.com/driftwatch/driftwatch/watch"
)

// fleetRow is one N's figures.
type fleetRow struct {
	Agents             int                `json:"agents"`
	SharedConnections  bool               `json:"shared_connections,omitempty"`
	StartupSeconds     float64            `json:"startup_seconds"` // start → every Bundle Ready upstream
	WindowSeconds      float64            `json:"window_seconds"`
	Changes            int                `json:"bundle_changes"`
	Reloads            int                `json:"credential_reloads"`
	ReqPerAgentMin     float64            `json:"requests_per_agent_per_minute"`
	ByVerb             map[string]float64 `json:"by_verb_per_agent_per_minute"`
	ReqPerSecond       float64            `json:"agent_requests_per_second"`
	APIServerCores     float64            `json:"apiserver_cores"`
	APIServerIdleCores float64            `json:"apiserver_cores_before_agents"`
	EtcdCores          float64            `json:"etcd_cores"`
	APIServerRSS       float64            `json:"apiserver_rss_bytes"`
	APIServerRSSBefore float64            `json:"apiserver_rss_bytes_before_agents"`
	EtcdDBBytes        float64            `json:"etcd_db_bytes"`
	EtcdDBBefore       float64            `json:"etcd_db_bytes_before_agents"`
	SimRSSPerAgent     float64            `json:"simulator_rss_bytes_per_agent"`
	SimCores           float64            `json:"simulator_cores"`
	LeaseAgeMax        float64            `json:"lease_age_max_seconds"`
	LeasesLate         int                `json:"leases_older_than_two_periods"`
	StatusLagP50       float64            `json:"change_to_status_p50_seconds"`
	StatusLagP99       float64            `json:"change_to_status_p99_seconds"`
	StatusLagMax       float64            `json:"change_to_status_max_seconds"`
	ChangesUnreported  int                `json:"changes_unreported"`
}

// fleetHeartbeat is the agent's default --heartbeat-period.
const fleetHeartbeat = 15 * time.Second

// runFleetSim is -scenario fleet-sim.
func runFleetSim(ctx context.Context, o options) error {
	var rows []fleetRow
	for _, n := range o.fleetSizes {
		r, err := simulateFleet(ctx, o, n)
		if err != nil {
			return fmt.Errorf("fleet of %d: %w", n, err)
		}
		rows = append(rows, r)
		printFleetRow(os.Stdout, r)
	}
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.out+"-fleet.json", b, 0o644); err != nil {
		return err
	}
	printFleetTable(os.Stdout, rows)
	return nil
}

// simulateFleet measures one fleet of n agents on fresh control planes.
func simulateFleet(ctx context.Context, o options, n int) (fleetRow, error) {
	r := fleetRow{Agents: n, SharedConnections: o.fleetSharedConnections}
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("agent-%04d", i)
	}
	fmt.Fprintf(os.Stderr, "bench: fleet-sim: %d agents against one upstream\n", n)
	e, err := startUpstreamEnv(ctx, users, io.Discard)
	if err != nil {
		return r, err
	}
	defer e.stop()
	if err := prepareFleet(ctx, e, users); err != nil {
		return r, err
	}
	apiserver := e.up.Pids()[1]
	idle, err := cpuOver(apiserver, 30*time.Second)
	if err != nil {
		return r, err
	}
	r.APIServerIdleCores = idle / 30
	if r.APIServerRSSBefore, err = procRSS(apiserver); err != nil {
		return r, err
	}
	if r.EtcdDBBefore, err = etcdDBSize(e); err != nil {
		return r, err
	}
	simBefore, _ := procRSS(os.Getpid())

	fleet, err := startFleet(ctx, e, users, o.fleetSharedConnections)
	if err != nil {
		return r, err
	}
	defer fleet.stop()
	start := time.Now()
	if err := waitFleetReady(ctx, e, n, 15*time.Minute); err != nil {
		return r, err
	}
	r.StartupSeconds = time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "bench: fleet-sim: %d Bundles Ready upstream in %.1f s; settling 30 s, then a window of %s\n", n, r.StartupSeconds, o.fleetWindow)
	time.Sleep(30 * time.Second) // a measurement window's gap, not synchronisation: the start's writes end

	if err := measureFleetWindow(ctx, o, e, fleet, &r); err != nil {
		return r, err
	}
	simAfter, _ := procRSS(os.Getpid())
	r.SimRSSPerAgent = (simAfter - simBefore) / float64(n)
	if r.APIServerRSS, err = procRSS(apiserver); err != nil {
		return r, err
	}
	if r.EtcdDBBytes, err = etcdDBSize(e); err != nil {
		return r, err
	}
	return r, leaseAges(ctx, e, &r)
}

// measureFleetWindow runs the window: Bundles changed and credentials
// rewritten at their shares per minute, CPU and requests counted.
func measureFleetWindow(ctx context.Context, o options, e *upstreamEnv, fleet *simFleet, r *fleetRow) error {
	apiserver, etcd := e.up.Pids()[1], e.up.Pids()[0]
	offset, err := e.audit.offset()
	if err != nil {
		return err
	}
	lags := newLagWatch(ctx, e)
	defer lags.stop()
	pids := []int{apiserver, etcd, os.Getpid()}
	c0, err := cpuOfAll(pids)
	if err != nil {
		return err
	}
	from := time.Now()
	wctx, cancel := context.WithTimeout(ctx, o.fleetWindow)
	var wg sync.WaitGroup
	var changes, reloads atomic.Int64
	wg.Go(func() {
		every(wctx, time.Duration(float64(time.Minute)/(o.fleetChangeShare*float64(len(fleet.agents)))), func(i int) {
			ns := fleet.agents[i%len(fleet.agents)].ns
			if lags.change(wctx, ns, i) == nil {
				changes.Add(1)
			}
		})
	})
	if o.fleetReloadShare > 0 {
		wg.Go(func() {
			every(wctx, time.Duration(float64(time.Minute)/(o.fleetReloadShare*float64(len(fleet.agents)))), func(i int) {
				// From the end of the list: other agents than those changed.
				if fleet.agents[len(fleet.agents)-1-i%len(fleet.agents)].rewriteCA(i) == nil {
					reloads.Add(1)
				}
			})
		})
	}
	wg.Wait()
	cancel()
	to := time.Now()
	c1, err := cpuOfAll(pids)
	if err != nil {
		return err
	}
	secs := to.Sub(from).Seconds()
	r.WindowSeconds, r.Changes, r.Reloads = secs, int(changes.Load()), int(reloads.Load())
	r.APIServerCores, r.EtcdCores, r.SimCores = (c1[0]-c0[0])/secs, (c1[1]-c0[1])/secs, (c1[2]-c0[2])/secs
	req, err := e.audit.countUsers(ctx, offset, func(u string) bool { return strings.HasPrefix(u, "agent-") }, from, to)
	if err != nil {
		return err
	}
	agentMinutes := float64(len(fleet.agents)) * secs / 60
	r.ByVerb = map[string]float64{}
	total := 0
	for k, v := range req.ByVerb {
		r.ByVerb[k] = float64(v) / agentMinutes
		total += v
	}
	r.ReqPerAgentMin, r.ReqPerSecond = float64(total)/agentMinutes, float64(total)/secs
	// Changes made at the window's end are given a minute to be reported.
	lags.waitAll(ctx, time.Minute)
	r.StatusLagP50, r.StatusLagP99, r.StatusLagMax, r.ChangesUnreported = lags.figures()
	return nil
}

// every calls f(0), f(1), … once per interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func(int)) {
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(i)
		}
	}
}

// cpuOfAll reads the CPU seconds of each process.
func cpuOfAll(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, p := range pids {
		v, err := procCPU(p)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// etcdDBSize is the size of the upstream etcd's database file.
func etcdDBSize(e *upstreamEnv) (float64, error) {
	st, err := os.Stat(filepath.Join(e.up.Dir, "etcd", "member", "snap", "db"))
	if err != nil {
		return 0, fmt.Errorf("etcd's database: %w", err)
	}
	return float64(st.Size()), nil
}

// prepareFleet prepares every agent's namespace in both clusters, 16 at a
// time.
func prepareFleet(ctx context.Context, e *upstreamEnv, users []string) error {
	errs := make(chan error, len(users))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs <- e.prepareAgent(ctx, fleetNamespace(i), u, 1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func fleetNamespace(i int) string { return fmt.Sprintf("fleet-%04d", i) }

// simFleet is the simulated agents of one run.
type simFleet struct {
	agents []*simAgent
	log    *os.File
}

// simAgent is one agent's upstream side: its credentials' files and the
// goroutines that run it.
type simAgent struct {
	ns, dir string
	ca      []byte
	caTag   string // in the CA file's comment: its own, or one for all
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// startFleet starts one simulated agent per user, on one shared set of
// target clients.
func startFleet(ctx context.Context, e *upstreamEnv, users []string, shared bool) (*simFleet, error) {
	log, err := os.Create(filepath.Join(e.dir, "fleet-sim.log"))
	if err != nil {
		return nil, err
	}
	setKlog(map[string]string{"logtostderr": "false", "stderrthreshold": "FATAL"})
	klog.SetOutput(log)
	f := &simFleet{log: log}
	copts := clusters.DefaultOptions()
	copts.Kubeconfig = e.target.Kubeconfig(cluster.AdminUser)
	target, err := clusters.NewTarget(copts)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(e.up.CACert())
	if err != nil {
		return nil, err
	}
	for i, u := range users {
		a := &simAgent{ns: fleetNamespace(i), dir: filepath.Join(e.dir, "agents", u), ca: ca, caTag: fleetNamespace(i)}
		if shared {
			a.caTag = "shared" // the same CA bytes for all: client-go shares their connections
		}
		if err := a.writeCredentials(e.up.Host, e.up.Token(u), 0); err != nil {
			f.stop()
			return nil, err
		}
		if err := a.start(ctx, target, copts); err != nil {
			f.stop()
			return nil, fmt.Errorf("agent %s: %w", u, err)
		}
		f.agents = append(f.agents, a)
	}
	return f, nil
}

// stop stops every agent and waits for their goroutines.
func (f *simFleet) stop() {
	for _, a := range f.agents {
		a.cancel()
	}
	for _, a := range f.agents {
		a.done.Wait()
	}
	f.agents = nil
	klog.Flush()
	klog.SetOutput(os.Stderr)
	setKlog(map[string]string{"logtostderr": "true", "stderrthreshold": "ERROR"})
	if f.log != nil {
		f.log.Close()
	}
}

// setKlog sets klog's flags (the simulated agents' logs go to a file,
// errors included).
func setKlog(values map[string]string) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range values {
		_ = fs.Set(k, v) // klog's own flags: they exist
	}
}

const simKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: upstream
  cluster: {server: %q, certificate-authority: ca.crt}
users:
- name: agent
  user: {tokenFile: token}
contexts:
- name: upstream
  context: {cluster: upstream, user: agent}
current-context: upstream
`

// writeCredentials writes the agent's source kubeconfig, token and CA.
// The CA file starts with a comment of its own (PEM allows text before a
// block): client-go keys its shared transports by the CA's bytes, so each
// agent gets its own TLS connection, as agents in their own clusters
// have; a new comment is a credential change that makes the agent
// reconnect (generation).
func (a *simAgent) writeCredentials(server, token string, generation int) error {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	files := map[string]string{
		"kubeconfig": fmt.Sprintf(simKubeconfig, server),
		"token":      token,
		"ca.crt":     fmt.Sprintf("# %s, credentials %d\n%s", a.caTag, generation, a.ca),
	}
	for _, name := range []string{"token", "kubeconfig", "ca.crt"} {
		tmp := filepath.Join(a.dir, "."+name)
		if err := os.WriteFile(tmp, []byte(files[name]), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(a.dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// rewriteCA gives the agent new CA bytes (the same CA): its WatchSource
// reloads, and it reconnects on new clients.
func (a *simAgent) rewriteCA(generation int) error {
	tmp := filepath.Join(a.dir, ".ca.crt")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "# %s, credentials %d\n%s", a.caTag, generation+1, a.ca), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.dir, "ca.crt"))
}

// start composes and runs one agent as commands.agent does in upstream
// mode with --namespace and --cluster-name a.ns, raw manifests only.
func (a *simAgent) start(ctx context.Context, target *clusters.Clients, copts clusters.Options) error {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	copts.Target, copts.SourceKubeconfig, copts.Observer = target, filepath.Join(a.dir, "kubeconfig"), m
	provider, err := clusters.New(copts)
	if err != nil {
		return err
	}
	applier := apply.New(target.Dynamic, target.Metadata, target.Mapper, apply.Options{FieldManager: "driftwatch", Concurrency: 32})
	opts := drift.DefaultOptions()
	opts.Namespace, opts.ParentNamespace = a.ns, a.ns
	opts.Tenancy = tenancy.Policy{AgentUser: cluster.AdminUser}
	opts.QueueMetrics = metrics.NewQueues(reg)
	opts.Cluster = manifests.Cluster{Name: a.ns}
	opts.TargetMetadata, opts.ActAs, opts.TargetEvents = target.Metadata, provider.Impersonate, target.Kube.EventsV1()
	selector := ownership.BundleLabel + "=" + ownership.BundleLabelValue(ownership.Bundle{Namespace: a.ns, Name: "app"})
	watches := watch.New(target.Metadata, target.Dynamic, watch.Options{LabelSelector: selector, NeedsStatus: watch.NeedsStatus})
	ctrl := drift.New(provider, applier, watches, m, opts)
	ctx, a.cancel = context.WithCancel(klog.NewContext(ctx, klog.Background().WithValues("agent", a.ns)))
	a.done.Go(func() {
		if err := ctrl.Run(ctx); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "Simulated agent stopped")
		}
	})
	a.done.Go(func() { provider.WatchSource(ctx, clusters.DefaultReloadOptions()) })
	a.done.Go(func() {
		provider.Heartbeat(ctx, clusters.HeartbeatOptions{Namespace: a.ns, Name: a.ns, Identity: "fleet-sim",
			Period: fleetHeartbeat, FieldManager: "driftwatch",
			Annotations: map[string]string{clusters.VersionAnnotation: "fleet-sim", clusters.ClusterLabelsAnnotation: "{}"}})
	})
	return nil
}

// waitFleetReady waits until n Bundles are Ready upstream.
func waitFleetReady(ctx context.Context, e *upstreamEnv, n int, timeout time.Duration) error {
	ready := 0
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := e.upDyn.Resource(manifests.BundleGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready = 0
		for i := range list.Items {
			if conditionTrue(&list.Items[i], manifests.ConditionReady) {
				ready++
			}
		}
		return ready >= n, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d Bundles Ready upstream after %s: %w", ready, n, timeout, err)
	}
	return nil
}

// leaseAges reads every heartbeat Lease: the oldest renewal and how many
// are older than two periods (an agent the upstream would see as late).
func leaseAges(ctx context.Context, e *upstreamEnv, r *fleetRow) error {
	list, err := e.upKube.CoordinationV1().Leases("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	now := time.Now()
	seen := 0
	for _, l := range list.Items {
		if !strings.HasPrefix(l.Namespace, "fleet-") || l.Name != l.Namespace {
			continue
		}
		seen++
		age := leaseAge(l, now)
		r.LeaseAgeMax = max(r.LeaseAgeMax, age.Seconds())
		if age > 2*fleetHeartbeat {
			r.LeasesLate++
		}
	}
	if seen != r.Agents {
		return fmt.Errorf("%d heartbeat Leases upstream, want %d", seen, r.Agents)
	}
	return nil
}

func leaseAge(l coordinationv1.Lease, now time.Time) time.Duration {
	if l.Spec.RenewTime == nil {
		return now.Sub(l.CreationTimestamp.Time)
	}
	return now.Sub(l.Spec.RenewTime.Time)
}

// lagWatch changes Bundles and times each change until the Bundle's status
// reports its generation observed, from one watch of every Bundle.
type lagWatch struct {
	e      *upstreamEnv
	mu     sync.Mutex
	sent   map[string]pendingChange // namespace → the last change not yet reported
	lags   []float64
	cancel context.CancelFunc
	done   chan struct{}
}

type pendingChange struct {
	generation int64
	at         time.Time
}

func newLagWatch(ctx context.Context, e *upstreamEnv) *lagWatch {
	ctx, cancel := context.WithCancel(ctx)
	l := &lagWatch{e: e, sent: map[string]pendingChange{}, cancel: cancel, done: make(chan struct{})}
	inf := dynamicinformer.NewDynamicSharedInformerFactory(e.upDyn, 0).ForResource(manifests.BundleGVR).Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			l.seen(u)
		}
	}}) // fails only once stopped
	go func() {
		defer close(l.done)
		inf.RunWithContext(ctx)
	}()
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	return l
}

func (l *lagWatch) stop() { l.cancel(); <-l.done }

// change edits the Bundle of ns: its ConfigMap gets a new value.
func (l *lagWatch) change(ctx context.Context, ns string, i int) error {
	content := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-000}\ndata: {value: changed-%d}\n", i)
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"resources": []any{map[string]any{"name": "cms.yaml", "content": content}}}})
	at := time.Now()
	u, err := l.e.upDyn.Resource(manifests.BundleGVR).Namespace(ns).Patch(ctx, "app", types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.sent[ns] = pendingChange{generation: u.GetGeneration(), at: at}
	l.mu.Unlock()
	return nil
}

func (l *lagWatch) seen(u *unstructured.Unstructured) {
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.sent[u.GetNamespace()]
	if !ok || observed < p.generation || !conditionTrue(u, manifests.ConditionReady) {
		return
	}
	l.lags = append(l.lags, time.Since(p.at).Seconds())
	delete(l.sent, u.GetNamespace())
}

// waitAll waits up to timeout for every change to be reported.
func (l *lagWatch) waitAll(ctx context.Context, timeout time.Duration) {
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.sent) == 0, nil
	}) // what is still missing is reported as unreported
}

func (l *lagWatch) figures() (p50, p99, maxLag float64, unreported int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lags := slices.Clone(l.lags)
	sort.Float64s(lags)
	if len(lags) > 0 {
		p50, p99, maxLag = lags[len(lags)/2], lags[min(len(lags)-1, len(lags)*99/100)], lags[len(lags)-1]
	}
	return p50, p99, maxLag, len(l.sent)
}

func printFleetRow(w io.Writer, r fleetRow) {
	mib := func(b float64) float64 { return b / (1 << 20) }
	fmt.Fprintf(w, "fleet-sim: %d agents, window %.0f s, %d Bundle changes, %d credential reloads\n", r.Agents, r.WindowSeconds, r.Changes, r.Reloads)
	fmt.Fprintf(w, "  start → every Bundle Ready upstream: %.1f s\n", r.StartupSeconds)
	keys := make([]string, 0, len(r.ByVerb))
	for k := range r.ByVerb {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-40s %7.3f per agent per minute\n", k, r.ByVerb[k])
	}
	fmt.Fprintf(w, "  all: %.3f per agent per minute = %.1f requests/s\n", r.ReqPerAgentMin, r.ReqPerSecond)
	fmt.Fprintf(w, "  upstream kube-apiserver %.3f cores (%.3f before the agents), etcd %.3f cores; simulator %.3f cores\n",
		r.APIServerCores, r.APIServerIdleCores, r.EtcdCores, r.SimCores)
	fmt.Fprintf(w, "  upstream kube-apiserver RSS %.0f MiB (%.0f before), etcd db %.1f MiB (%.1f before); simulator %.2f MiB per agent\n",
		mib(r.APIServerRSS), mib(r.APIServerRSSBefore), mib(r.EtcdDBBytes), mib(r.EtcdDBBefore), mib(r.SimRSSPerAgent))
	fmt.Fprintf(w, "  heartbeat Leases: oldest renewal %.1f s ago, %d older than two periods (%s)\n", r.LeaseAgeMax, r.LeasesLate, 2*fleetHeartbeat)
	fmt.Fprintf(w, "  Bundle change → status Ready for it: p50 %.2f s, p99 %.2f s, max %.2f s; %d not reported within a minute of the window's end\n",
		r.StatusLagP50, r.StatusLagP99, r.StatusLagMax, r.ChangesUnreported)
	fmt.Fprintf(w, "  (the simulator's goroutines now: %d)\n", runtime.NumGoroutine())
}

func printFleetTable(w io.Writer, rows []fleetRow) {
	fmt.Fprintln(w, "\n| agents | start → all Ready | req/agent/min | req/s | apiserver cores (idle before) | cores per 1,000 agents | etcd cores | apiserver RSS | etcd db | change → status p50 / p99 | late leases |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %.1f s | %.2f | %.1f | %.3f (%.3f) | %.3f | %.3f | %.0f MiB | %.1f MiB | %.2f / %.2f s | %d |\n",
			r.Agents, r.StartupSeconds, r.ReqPerAgentMin, r.ReqPerSecond, r.APIServerCores, r.APIServerIdleCores,
			(r.APIServerCores-r.APIServerIdleCores)/float64(r.Agents)*1000, r.EtcdCores,
			r.APIServerRSS/(1<<20), r.EtcdDBBytes/(1<<20), r.StatusLagP50, r.StatusLagP99, r.LeasesLate)
	}
}
