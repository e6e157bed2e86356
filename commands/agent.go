package commands

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/drift"
	"github.com/driftwatch/driftwatch/helmrun"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/metrics"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/tenancy"
	"github.com/driftwatch/driftwatch/watch"
)

// defaultGCPercent is the agent's GOGC unless the environment sets one.
const defaultGCPercent = 50

// maxVerbosity is the highest log level: client-go logs request and
// response bodies from 8 on.
const maxVerbosity = 7

type agentFlags struct {
	kubeconfig, sourceKubeconfig string
	namespace                    string
	bundleNamespaces             string
	metricsAddr, healthAddr      string
	fieldManager                 string
	concurrency                  int
	resyncPeriod                 time.Duration
	profiling                    bool
	leaderElect                  bool
	leaseDuration                time.Duration
	clusterName                  string
	clusterLabels                labelFlag
	heartbeatPeriod              time.Duration
	chartCacheDir                string
	chartCacheBytes              int64
	defaultServiceAccount        string
	maxBundleBytes               int64
	maxBundleObjects             int
}

// labelFlag is a repeatable key=value flag.
type labelFlag map[string]string

func (l *labelFlag) String() string {
	keys := make([]string, 0, len(*l))
	for k, v := range *l {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

// Type names the value for pflag (kubectl-driftwatch).
func (l *labelFlag) Type() string { return "key=value" }

func (l *labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not key=value", s)
	}
	if errs := validation.IsQualifiedName(k); len(errs) > 0 {
		return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
		return fmt.Errorf("label value %q: %s", v, strings.Join(errs, "; "))
	}
	if *l == nil {
		*l = labelFlag{}
	}
	(*l)[k] = v
	return nil
}

func runAgent(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f agentFlags
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the target cluster (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&f.sourceKubeconfig, "source-kubeconfig", "", "kubeconfig of the cluster that holds Bundles (default: the target)")
	fs.StringVar(&f.namespace, "namespace", "driftwatch-system", "the agent's own namespace: its Bundles are watched, ApplySet parents and the leader Lease live there")
	fs.StringVar(&f.bundleNamespaces, "bundle-namespaces", "", "further namespaces whose Bundles are watched, comma-separated, or * for all (tenants' namespaces; a Bundle always acts as a ServiceAccount of its own namespace, within its namespace's BundleRestrictions)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of /metrics")
	fs.StringVar(&f.healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&f.fieldManager, "field-manager", "driftwatch", "server-side apply field manager")
	fs.IntVar(&f.concurrency, "concurrency", 4, "bundle workers; together they apply up to 8 times as many objects at once")
	fs.BoolVar(&f.profiling, "profiling", false, "serve /debug/pprof/ on the metrics address")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "run only while holding the Lease driftwatch-leader in --namespace of the target cluster (for more than one replica)")
	fs.DurationVar(&f.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal")
	fs.DurationVar(&f.resyncPeriod, "resync-period", 10*time.Minute, "safety-net check of every owned object against the cache")
	fs.StringVar(&f.clusterName, "cluster-name", "", "name of the target cluster (required with --source-kubeconfig: the heartbeat Lease in the source is named after it)")
	fs.Var(&f.clusterLabels, "cluster-label", "a label of the target cluster, key=value (repeatable); target customisations select on them")
	fs.DurationVar(&f.heartbeatPeriod, "heartbeat-period", 15*time.Second, "with --source-kubeconfig: how often the heartbeat Lease in the source namespace is renewed")
	fs.StringVar(&f.chartCacheDir, "chart-cache-dir", defaultChartCacheDir(), "downloaded Helm charts, by digest")
	fs.Int64Var(&f.chartCacheBytes, "chart-cache-bytes", 256<<20, "bound on the chart cache; the least recently used charts go first")
	fs.StringVar(&f.defaultServiceAccount, "default-service-account", "", "ServiceAccount that Bundles without spec.serviceAccountName (nor a BundleRestriction's default) act as, impersonated, in each Bundle's own namespace; the multi-tenant setting: no Bundle then acts with the agent's own rights")
	fs.Int64Var(&f.maxBundleBytes, "max-bundle-bytes", manifests.DefaultLimits.Bytes, fmt.Sprintf("largest total decoded size (after base64 and gzip) of one Bundle's resources, at most %d; a larger Bundle is not rendered and says so", manifests.HardMaxBytes))
	fs.IntVar(&f.maxBundleObjects, "max-bundle-objects", manifests.DefaultLimits.Objects, "most documents one Bundle may render to; a Bundle with more is not applied and says so")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", fmt.Sprintf("log verbosity, at most %d", maxVerbosity))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if v, _ := strconv.Atoi(klogFlags.Lookup("v").Value.String()); v > maxVerbosity {
		// From 8 on, client-go logs request and response bodies: the
		// applies of Secrets, with their values.
		_ = klogFlags.Lookup("v").Value.Set(strconv.Itoa(maxVerbosity))
		fmt.Fprintf(stderr, "agent: -v %d lowered to %d: higher levels log request bodies, Secret values among them\n", v, maxVerbosity)
	}
	if err := f.check(); err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return 2
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		// The agent's live heap is mostly its caches, and it allocates
		// little between syncs: collecting at 1.5× the live heap instead of
		// Go's default 2× keeps RSS ~15 % lower (10k owned objects: 59 vs
		// 67 MiB during a stream of corrections) for ~6 % more CPU in a full
		// sync (docs/performance.md). GOGC in the environment overrides it.
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	if err := agent(ctx, f); err != nil {
		klog.ErrorS(err, "driftwatch agent failed")
		return 1
	}
	return 0
}

// check refuses flags that cannot work together or name nothing valid.
func (f *agentFlags) check() error {
	if f.sourceKubeconfig != "" {
		if errs := validation.IsDNS1123Subdomain(f.clusterName); len(errs) > 0 {
			return fmt.Errorf("--source-kubeconfig needs a --cluster-name that names a Lease: %q: %s", f.clusterName, strings.Join(errs, "; "))
		}
	}
	if f.maxBundleBytes < 1 || f.maxBundleBytes > manifests.HardMaxBytes || f.maxBundleObjects < 1 {
		return fmt.Errorf("--max-bundle-bytes must be 1..%d and --max-bundle-objects at least 1", manifests.HardMaxBytes)
	}
	if _, err := bundleNamespaces(f.bundleNamespaces); err != nil {
		return fmt.Errorf("--bundle-namespaces: %w", err)
	}
	if f.defaultServiceAccount != "" {
		if errs := validation.IsDNS1123Subdomain(f.defaultServiceAccount); len(errs) > 0 {
			return fmt.Errorf("--default-service-account %q: %s", f.defaultServiceAccount, strings.Join(errs, "; "))
		}
	}
	return nil
}

// bundleNamespaces parses --bundle-namespaces: names, or "*" for all
// (metav1.NamespaceAll).
func bundleNamespaces(v string) ([]string, error) {
	var out []string
	for _, ns := range strings.Split(v, ",") {
		switch ns = strings.TrimSpace(ns); {
		case ns == "":
		case ns == "*":
			return []string{metav1.NamespaceAll}, nil
		default:
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, fmt.Errorf("%q: %s", ns, strings.Join(errs, "; "))
			}
			out = append(out, ns)
		}
	}
	return out, nil
}

// whoAmI is the user name the agent authenticates as in the target
// cluster (a SelfSubjectReview): Bundles that name its ServiceAccount are
// refused.
func whoAmI(ctx context.Context, kube kubernetes.Interface) (string, error) {
	r, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("who the agent is in the target cluster (SelfSubjectReview): %w", err)
	}
	return r.Status.UserInfo.Username, nil
}

// defaultChartCacheDir is under the user's cache directory, else the
// temporary directory (a container's writable /tmp).
func defaultChartCacheDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "driftwatch", "charts")
	}
	return filepath.Join(os.TempDir(), "driftwatch-charts")
}

func agent(ctx context.Context, f agentFlags) error {
	logger := klog.FromContext(ctx)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	metrics.RegisterClientGo(reg)

	copts := clusters.DefaultOptions()
	copts.Kubeconfig, copts.SourceKubeconfig, copts.Observer = f.kubeconfig, f.sourceKubeconfig, m
	provider, err := clusters.New(copts)
	if err != nil {
		return err
	}
	target := provider.Target()

	applier := apply.New(target.Dynamic, target.Metadata, target.Mapper, apply.Options{FieldManager: f.fieldManager, Concurrency: 8 * f.concurrency})
	if err := ensureNamespace(ctx, target.Dynamic, f.namespace, f.fieldManager); err != nil {
		return err
	}

	ctrl, err := newController(ctx, f, provider, applier, reg, m)
	if err != nil {
		return err
	}

	servers := []*http.Server{
		{Addr: f.metricsAddr, Handler: metricsMux(reg, f.profiling)},
		{Addr: f.healthAddr, Handler: healthMux(ctrl.Ready)},
	}
	errc := serve(servers)
	if n := releaseBinaryPages(); n > 0 {
		logger.V(2).Info("Paged out the binary's start-up pages", "bytes", n)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	run := func(ctx context.Context) error { return runWithSource(ctx, provider, f, ctrl.Run) }
	if f.leaderElect {
		go func() { done <- runElected(runCtx, target.Kube, f, run) }()
	} else {
		go func() { done <- run(runCtx) }()
	}
	logger.Info("driftwatch agent started", "namespace", f.namespace, "fieldManager", f.fieldManager,
		"metrics", f.metricsAddr, "health", f.healthAddr)

	var runErr error
	select {
	case runErr = <-done:
	case runErr = <-errc:
		cancel()
		<-done
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelShutdown()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx) // best effort on the way out
	}
	return runErr
}

// newController builds the drift controller: who the agent is and the
// tenancy rules, the render pipeline with Helm and Kustomize, the watches.
func newController(ctx context.Context, f agentFlags, provider *clusters.Provider, applier *apply.Applier,
	reg *prometheus.Registry, m *metrics.Metrics) (*drift.Controller, error) {
	logger := klog.FromContext(ctx)
	target := provider.Target()
	opts := drift.DefaultOptions()
	opts.Namespace, opts.ParentNamespace = f.namespace, f.namespace
	opts.BundleNamespaces, _ = bundleNamespaces(f.bundleNamespaces) // checked with the flags
	user, err := whoAmI(ctx, target.Kube)
	if err != nil {
		return nil, err
	}
	logger.Info("Acting in the target cluster as", "user", user)
	opts.Tenancy = tenancy.Policy{DefaultServiceAccount: f.defaultServiceAccount, AgentUser: user}
	opts.Workers, opts.ResyncPeriod = f.concurrency, f.resyncPeriod
	opts.QueueMetrics = metrics.NewQueues(reg)
	opts.Cluster = manifests.Cluster{Name: f.clusterName, Labels: f.clusterLabels}
	opts.TargetMetadata = target.Metadata
	opts.ActAs = provider.Impersonate
	opts.TargetEvents = target.Kube.EventsV1()
	var source func() *clusters.Clients // one cluster: credentials are read as the Bundle's account
	if f.sourceKubeconfig != "" {
		source = func() *clusters.Clients { c, _ := provider.Source(); return c }
	}
	releases, err := helmrun.New(helmrun.Options{Target: target, Source: source, ActAs: provider.Impersonate,
		Prepare: func(b types.NamespacedName, spec *manifests.BundleSpec, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			// The Target a sync of a Helm Bundle prepares with (drift's bundleState.target).
			return applier.PrepareChartObject(obj, apply.TargetOf(ownership.NewSet(b, f.namespace), spec))
		},
		FieldManager: f.fieldManager,
		CacheDir:     f.chartCacheDir, CacheBytes: f.chartCacheBytes, Logger: logger.WithName("helm")})
	if err != nil {
		return nil, err
	}
	opts.Pipeline = newPipeline(releases, manifests.Limits{Bytes: f.maxBundleBytes, Objects: f.maxBundleObjects})
	watches := watch.New(target.Metadata, target.Dynamic, watch.Options{LabelSelector: ownership.BundleLabel, NeedsStatus: watch.NeedsStatus})
	return drift.New(provider, applier, watches, m, opts), nil
}

// serve starts the HTTP servers; the channel gets the first that fails.
func serve(servers []*http.Server) <-chan error {
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if err := s.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving %s: %w", s.Addr, err)
			}
		}()
	}
	return errc
}

// runWithSource runs the controller and, in upstream mode, what keeps its
// source connection alive: the watch on the source credentials and the
// heartbeat. It returns when all of them have stopped.
func runWithSource(ctx context.Context, provider *clusters.Provider, f agentFlags, run func(context.Context) error) error {
	if f.sourceKubeconfig == "" {
		return run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { provider.WatchSource(ctx, clusters.DefaultReloadOptions()) })
	labels, _ := json.Marshal(f.clusterLabels) // a map of strings always marshals
	host, _ := os.Hostname()                   // only a name for people to read
	wg.Go(func() {
		provider.Heartbeat(ctx, clusters.HeartbeatOptions{
			Namespace: f.namespace, Name: f.clusterName, Identity: host, Period: f.heartbeatPeriod,
			FieldManager: f.fieldManager,
			Annotations:  map[string]string{clusters.VersionAnnotation: version, clusters.ClusterLabelsAnnotation: string(labels)},
		})
	})
	return run(ctx)
}

func metricsMux(reg *prometheus.Registry, profiling bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// healthMux serves /healthz (the process answers) and /readyz (Bundles
// are synced from the source cluster and workers run).
func healthMux(ready func() bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "bundle cache not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

// ensureNamespace makes sure the agent's namespace exists in the target
// cluster: ApplySet parents live there.
func ensureNamespace(ctx context.Context, client dynamic.Interface, name, manager string) error {
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	_, err := client.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).
		Apply(ctx, name, ns, metav1.ApplyOptions{FieldManager: manager})
	if err != nil {
		return fmt.Errorf("namespace %s in the target cluster: %w", name, err)
	}
	return nil
}

// runElected runs run only while this process holds the leader Lease
// driftwatch-leader of --namespace (clusters.RunElected).
func runElected(ctx context.Context, client kubernetes.Interface, f agentFlags, run func(context.Context) error) error {
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	return clusters.RunElected(ctx, client, clusters.ElectionOptions{Namespace: f.namespace, Name: ownership.LeaderLease,
		Identity: host + "_" + string(uuid.NewUUID()), LeaseDuration: f.leaseDuration}, run)
}
