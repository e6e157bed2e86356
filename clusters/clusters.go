// Package clusters is the one place where driftwatch builds Kubernetes
// clients. A Provider hands out the clients of the target cluster (where
// objects are applied) and of the source cluster (where Bundles live and
// status is written), clients that impersonate a ServiceAccount, and the
// REST client getter that Helm's action.Configuration takes. It signals when
// the source cluster's clients are replaced (new credentials or a new
// server), so that whoever uses them can restart on the new ones.
package clusters

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say how to reach the clusters.
type Options struct {
	// Kubeconfig of the target cluster; "" means in-cluster, then
	// $KUBECONFIG, then ~/.kube/config.
	Kubeconfig string
	// SourceKubeconfig of the source cluster; "" means the target.
	SourceKubeconfig string
	// UserAgent of every client.
	UserAgent string
	// Client-side rate limits. Corrections must not queue behind a
	// client-side limiter (the API server's priority and fairness protects
	// it), so the target's are high; status writes and events to the
	// source need enough for a burst of corrections (make bench: at
	// client-go's default 5 QPS they trailed for minutes).
	TargetQPS, SourceQPS     float32
	TargetBurst, SourceBurst int
	// Observer hears the source's answers and credential reloads; nil:
	// nobody.
	Observer Observer
	// Target, when set, are the target cluster's clients, shared with
	// other Providers of the same process (the fleet simulator runs many
	// agents against one target); Kubeconfig is then not read.
	Target *Clients
}

// DefaultOptions returns the options the agent runs with.
func DefaultOptions() Options {
	return Options{UserAgent: "driftwatch", TargetQPS: 500, TargetBurst: 1000, SourceQPS: 50, SourceBurst: 100}
}

// Clients are the clients of one cluster, built from one configuration.
// They are safe for concurrent use and never change: a new configuration
// makes new Clients.
type Clients struct {
	Config    *rest.Config
	Dynamic   dynamic.Interface
	Metadata  metadata.Interface
	Kube      kubernetes.Interface
	Discovery discovery.CachedDiscoveryInterface
	// Mapper maps kinds to resources through cached discovery; Reset it
	// after CRDs change.
	Mapper meta.ResettableRESTMapper
	// rawConfig is the kubeconfig this came from, for Helm's getter.
	rawConfig clientcmd.ClientConfig
}

// NewClients builds the clients of one cluster from its configuration.
func NewClients(cfg *rest.Config) (*Clients, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc := memory.NewMemCacheClient(kube.Discovery())
	return &Clients{Config: cfg, Dynamic: dyn, Metadata: md, Kube: kube, Discovery: disc,
		Mapper: restmapper.NewDeferredDiscoveryRESTMapper(disc)}, nil
}

// Provider hands out the clients of the source and target clusters.
type Provider struct {
	target   *Clients
	opts     Options
	observer Observer
	// sourcePath is the source kubeconfig that WatchSource follows; ""
	// when the source is the target.
	sourcePath string
	refusedc   chan struct{} // a 401 or 403 from the source

	// contactMu guards answering (the source's last request got an
	// answer) and answered (closed when it answers again).
	contactMu sync.Mutex
	answering bool
	answered  chan struct{}

	mu           sync.Mutex
	source       *Clients
	sourceSwap   chan struct{} // closed when source is replaced
	impersonated map[string]*Clients
	// used orders impersonated by last use, oldest first: beyond
	// MaxImpersonated accounts the least recently used are dropped (their
	// clients, each with its own discovery cache, are built again on use).
	used []string
	// sourceFingerprint and sourceFiles describe the source kubeconfig
	// the clients were built from; lastReloadErr is the last reload's
	// error, reported once.
	sourceFingerprint [32]byte
	sourceFiles       []string
	lastReloadErr     string
}

// New builds the clients of both clusters from the kubeconfigs in opts.
func New(opts Options) (*Provider, error) {
	f := &sourceFiles{}
	target := opts.Target
	switch {
	case target != nil && opts.SourceKubeconfig == "":
		return nil, errors.New("shared target clients need a source kubeconfig")
	case target == nil:
		var err error
		if target, f.config, err = newTarget(opts); err != nil {
			return nil, err
		}
		f.raw = target.rawConfig
	}
	p := NewProvider(target, nil)
	p.opts, p.observer, p.sourcePath = opts, opts.Observer, opts.SourceKubeconfig
	if opts.SourceKubeconfig != "" {
		var err error
		if f, err = readSource(opts.SourceKubeconfig); err != nil {
			return nil, fmt.Errorf("source cluster: %w", err)
		}
		p.sourceFingerprint, p.sourceFiles = f.fingerprint, f.paths
	}
	var err error
	if p.source, err = p.sourceClients(f); err != nil {
		return nil, fmt.Errorf("source cluster: %w", err)
	}
	return p, nil
}

// NewTarget builds the target cluster's clients from opts.Kubeconfig, to
// share between the Providers of one process (Options.Target).
func NewTarget(opts Options) (*Clients, error) {
	target, _, err := newTarget(opts)
	return target, err
}

// newTarget returns the target's clients and the configuration they were
// tuned from.
func newTarget(opts Options) (*Clients, *rest.Config, error) {
	loaded, raw, err := LoadConfig(opts.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("target cluster: %w", err)
	}
	cfg := tuned(loaded, opts.UserAgent, opts.TargetQPS, opts.TargetBurst)
	withServerWait(cfg)
	target, err := NewClients(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("target cluster: %w", err)
	}
	target.rawConfig = raw
	return target, loaded, nil
}

// NewProvider returns a Provider of the given clients (source may be the
// target's).
func NewProvider(target, source *Clients) *Provider {
	return &Provider{target: target, source: source, sourceSwap: make(chan struct{}),
		refusedc: make(chan struct{}, 1), answering: true, answered: make(chan struct{}),
		impersonated: map[string]*Clients{}}
}

// tuned returns a copy of cfg with a user agent and rate limits.
func tuned(cfg *rest.Config, userAgent string, qps float32, burst int) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent
	if qps > 0 {
		cfg.QPS, cfg.Burst = qps, burst
	}
	withTokenFile(cfg)
	return cfg
}

// LoadConfig returns the configuration of a cluster: the kubeconfig at
// path, else the in-cluster configuration, else client-go's default
// loading rules ($KUBECONFIG, ~/.kube/config). It is the one place that
// reads kubeconfigs.
func LoadConfig(path string) (*rest.Config, clientcmd.ClientConfig, error) {
	if path == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	// No migration of ~/.kube/.kubeconfig: the agent writes nothing in
	// HOME, which may not even be a directory it can read.
	rules.MigrationRules = nil
	raw := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil)
	cfg, err := raw.ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	return cfg, raw, nil
}

// Target returns the target cluster's clients.
func (p *Provider) Target() *Clients { return p.target }

// Source returns the source cluster's clients, and a channel that is
// closed when they are replaced: the caller then asks again.
func (p *Provider) Source() (*Clients, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.source, p.sourceSwap
}

// ReplaceSource makes c the source cluster's clients and wakes whoever
// waits on the channel Source returned.
func (p *Provider) ReplaceSource(c *Clients) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.source = c
	close(p.sourceSwap)
	p.sourceSwap = make(chan struct{})
}

// Impersonate returns the target cluster's clients acting as a
// ServiceAccount (system:serviceaccount:NS:NAME), built once per account
// and cached: the API server then authorises every request as that
// account, and denies what its RBAC does not allow.
func (p *Provider) Impersonate(serviceAccount types.NamespacedName) (*Clients, error) {
	user := serviceaccount.MakeUsername(serviceAccount.Namespace, serviceAccount.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.impersonated[user]; ok {
		p.touch(user)
		return c, nil
	}
	cfg := rest.CopyConfig(p.target.Config)
	// No groups: the API server adds a ServiceAccount's own (and
	// system:authenticated), and checks only the impersonate verb on that
	// one serviceaccounts object — which RBAC can grant per namespace and
	// name. Naming groups would need impersonate on groups as well.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := NewClients(cfg)
	if err != nil {
		return nil, fmt.Errorf("clients for %s: %w", user, err)
	}
	p.impersonated[user] = c
	p.touch(user)
	for len(p.used) > MaxImpersonated {
		delete(p.impersonated, p.used[0])
		p.used = p.used[1:]
	}
	return c, nil
}

// MaxImpersonated bounds the accounts whose clients are kept.
const MaxImpersonated = 256

// touch makes user the most recently used account. The caller holds p.mu.
func (p *Provider) touch(user string) {
	if i := slices.Index(p.used, user); i >= 0 {
		p.used = slices.Delete(p.used, i, i+1)
	}
	p.used = append(p.used, user)
}

// The methods below make Clients a REST client getter
// (k8s.io/cli-runtime's genericclioptions.RESTClientGetter), which Helm's
// action.Configuration takes, so that Helm talks to the cluster with
// driftwatch's clients.

// ToRESTConfig returns a copy of the configuration.
func (c *Clients) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(c.Config), nil }

// ToDiscoveryClient returns the cached discovery client.
func (c *Clients) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return c.Discovery, nil
}

// ToRESTMapper returns the REST mapper.
func (c *Clients) ToRESTMapper() (meta.RESTMapper, error) { return c.Mapper, nil }

// ToRawKubeConfigLoader returns the kubeconfig the clients came from; for
// in-cluster or built configurations, one that yields the same
// configuration.
func (c *Clients) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	if c.rawConfig != nil {
		return c.rawConfig
	}
	return restConfigLoader{c.Config}
}
