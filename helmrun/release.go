package helmrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"helm.sh/helm/v4/pkg/action"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/manifests"
)

// InputsLabel on a release record holds the digest of the inputs it was
// made from (chart, values, options): equal inputs need no new revision.
// It also marks the records that driftwatch wrote.
const InputsLabel = "driftwatch.io/inputs"

// OwnerLabel on a release record names the Bundle that owns the release
// (ownership.BundleLabelValue form: namespace.name). Not driftwatch.io/bundle:
// the agent's informers select on that label's presence, and release
// records are not the Bundle's objects.
const OwnerLabel = "driftwatch.io/owner-bundle"

// Options configure Releases.
type Options struct {
	// Target is the cluster the releases live in.
	Target *clusters.Clients
	// Source returns the clients of the source cluster in upstream mode,
	// where credentials Secrets live, read with the agent's source
	// identity in the Bundle's own namespace; nil (one cluster): they are
	// read from Target as the Bundle's account.
	Source func() *clusters.Clients
	// Prepare prepares one object of a Bundle's release exactly as a sync
	// prepares it — namespace resolved (apply.TargetOf: targetNamespace
	// forced, else the release's namespace when it names none), reserved
	// objects refused, ownership labels stamped, hash annotated — and
	// returns it: the post-renderer stamps a release's objects with it.
	// Nil leaves them as Helm renders them.
	Prepare func(bundle types.NamespacedName, spec *manifests.BundleSpec, obj *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// FieldManager is the field manager of every write; Helm's
	// process-wide kube.ManagedFieldsManager is set to it.
	FieldManager string
	// CacheDir holds downloaded charts, at most CacheBytes of them.
	CacheDir   string
	CacheBytes int64
	Logger     logr.Logger
	// Template only renders (driftwatch render and diff): no release is
	// read or written and Target may be nil.
	Template bool
	// ActAs returns Target's clients impersonating the ServiceAccount a
	// Bundle acts as (Input.Access): its release is then read, installed,
	// upgraded and uninstalled, its objects' owners read, and its
	// valuesFrom and credentials read, as that account.
	ActAs func(serviceAccount types.NamespacedName) (*clusters.Clients, error)
}

// Releases installs and upgrades Bundles' charts as Helm releases. As a
// manifests.Renderer, its output is the objects of the release as
// deployed — its stored manifest, stamped by the post-renderer exactly as
// a sync prepares them — so that the drift engine corrects them with one
// server-side apply each, without Helm.
type Releases struct {
	opts  Options
	cache *chartCache

	mu sync.Mutex
	// deployed remembers, per release, the inputs and manifest of the
	// revision deployed last: an unchanged render then reads nothing.
	deployed map[types.NamespacedName]deployedRelease
}

type deployedRelease struct {
	inputs, manifest string
}

var _ manifests.Renderer = (*Releases)(nil)
var _ manifests.Uninstaller = (*Releases)(nil)

// New returns Releases. It sets Helm's field manager for the process.
func New(opts Options) (*Releases, error) {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 256 << 20
	}
	cache, err := newChartCache(opts.CacheDir, opts.CacheBytes)
	if err != nil {
		return nil, err
	}
	if opts.FieldManager != "" {
		kube.ManagedFieldsManager = opts.FieldManager
	}
	return &Releases{opts: opts, cache: cache, deployed: map[types.NamespacedName]deployedRelease{}}, nil
}

// request is one Bundle's release, resolved.
type request struct {
	in        manifests.Input
	clients   *clusters.Clients // what the Bundle acts as; nil offline
	name, ns  string
	chart     *loaded
	values    map[string]any
	inputs    string
	timeout   time.Duration
	maxHist   int
	releaseID types.NamespacedName
	owner     string // OwnerLabel's value for this Bundle
}

// ownerOf is OwnerLabel's value for a Bundle: namespace.name, shortened
// with a hash when it does not fit a label value.
func ownerOf(b types.NamespacedName) string {
	v := b.Namespace + "." + b.Name
	if len(v) <= 63 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return v[:46] + "-" + hex.EncodeToString(sum[:8])
}

// Render implements manifests.Renderer: it loads the chart and values,
// and, unless the release deployed last was made from the same inputs,
// installs or upgrades the release. Errors name what is wrong: the chart,
// a version, a values file, a template (file and line), Helm's own.
func (r *Releases) Render(ctx context.Context, in manifests.Input) (manifests.Output, error) {
	req, err := r.resolve(ctx, in)
	if err != nil {
		return manifests.Output{}, err
	}
	if r.opts.Template {
		rel, err := r.template(ctx, req)
		if err != nil {
			return manifests.Output{}, err
		}
		out, err := r.output(req, rel.Manifest, false)
		for _, o := range out.Objects {
			setHelmMetadata(o.Object, req.name, req.ns) // as an install adds it
		}
		return out, err
	}
	r.mu.Lock()
	d, ok := r.deployed[req.releaseID]
	r.mu.Unlock()
	if ok && d.inputs == req.inputs {
		return r.output(req, d.manifest, false)
	}
	cfg := r.configuration(req.clients, req.ns, req.maxHist)
	last, err := lastRelease(cfg, req)
	if err != nil {
		return manifests.Output{}, err
	}
	if err := owned(last, req); err != nil {
		return manifests.Output{}, err
	}
	if last != nil && r.current(last, req) {
		r.remember(req, last.Manifest)
		return r.output(req, last.Manifest, false)
	}
	rel, err := r.run(ctx, cfg, req, last)
	if err != nil {
		r.forgetRelease(req.releaseID)
		return manifests.Output{}, err
	}
	r.remember(req, rel.Manifest)
	out, err := r.output(req, rel.Manifest, true)
	out.Note = fmt.Sprintf("release %s/%s revision %d: %s (chart %s-%s)", req.ns, req.name, rel.Version,
		rel.Info.Description, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version)
	return out, err
}

// owned refuses a release of another Bundle, and one that no Bundle made
// (installed by hand, or by Helm 3) unless the Bundle takes ownership.
func owned(last *release.Release, req *request) error {
	if last == nil {
		return nil
	}
	switch owner := last.Labels[OwnerLabel]; {
	case owner == req.owner:
		return nil
	case owner != "":
		return fmt.Errorf("release %s/%s belongs to bundle %s; give this Bundle another spec.helm.releaseName or namespace", req.ns, req.name, owner)
	case !req.in.Spec.Helm.TakeOwnership && !req.in.Spec.Adopt:
		return fmt.Errorf("release %s/%s exists and was not installed by driftwatch; set spec.helm.takeOwnership (or spec.adopt) to take it over", req.ns, req.name)
	}
	return nil
}

// lastRelease returns the release's newest record, nil if it has none.
func lastRelease(cfg *action.Configuration, req *request) (*release.Release, error) {
	last, err := cfg.Releases.Last(req.name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", req.ns, req.name, err)
	}
	return asRelease(last, req)
}

// asRelease is the v1 release Helm's Releaser interface holds.
func asRelease(rel any, req *request) (*release.Release, error) {
	out, ok := rel.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("release %s/%s: Helm returned a %T", req.ns, req.name, rel)
	}
	return out, nil
}

// timeoutOf bounds one Helm operation of h.
func timeoutOf(h *manifests.HelmSpec) time.Duration {
	if h.TimeoutSeconds == 0 {
		return manifests.DefaultHelmTimeout * time.Second
	}
	return time.Duration(h.TimeoutSeconds) * time.Second
}

// resolve loads the chart and merges the values of in.
func (r *Releases) resolve(ctx context.Context, in manifests.Input) (*request, error) {
	h := in.Spec.Helm
	req := &request{in: in, name: h.ReleaseNameFor(in.Bundle.Name), ns: in.Spec.ReleaseNamespace()}
	if err := chartutil.ValidateReleaseName(req.name); err != nil {
		return nil, fmt.Errorf("spec.helm.releaseName %q: %w", req.name, err)
	}
	req.releaseID = types.NamespacedName{Namespace: req.ns, Name: req.name}
	req.owner = ownerOf(in.Bundle)
	var err error
	if req.clients, err = r.clientsFor(in); err != nil {
		return nil, err
	}
	req.timeout = timeoutOf(h)
	req.maxHist = manifests.DefaultMaxHistory
	if h.MaxHistory != nil {
		req.maxHist = *h.MaxHistory
	}
	creds, err := r.credentials(ctx, in, req.clients)
	if err != nil {
		return nil, err
	}
	if req.chart, err = r.loadChart(ctx, in.Spec, creds, in.Access.AllowInsecure); err != nil {
		return nil, err
	}
	if req.values, err = r.values(ctx, in, req.clients); err != nil {
		return nil, err
	}
	opts := *h
	opts.Values, opts.ValuesFiles, opts.ValuesFrom, opts.Chart, opts.Repo, opts.Version = nil, nil, nil, "", "", ""
	opts.CredentialsSecret, opts.MaxHistory, opts.TimeoutSeconds = "", nil, 0
	sum := sha256.New()
	for _, v := range []any{req.chart.digest, req.values, opts, req.name, req.ns, in.Spec.Drift.ForceEnabled(), in.Spec.Adopt} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		sum.Write(b)
		sum.Write([]byte{0})
	}
	req.inputs = hex.EncodeToString(sum.Sum(nil)[:16])
	return req, nil
}

// current reports whether the release deployed last is what req asks
// for: made by driftwatch from the same inputs, and not since changed by
// someone else (`helm upgrade` keeps custom labels, so the values and the
// chart are compared too).
func (r *Releases) current(last *release.Release, req *request) bool {
	if last.Info == nil || last.Info.Status != common.StatusDeployed || last.Labels[InputsLabel] != req.inputs || last.Chart == nil {
		return false
	}
	if last.Chart.Metadata.Name != req.chart.chart.Metadata.Name || last.Chart.Metadata.Version != req.chart.chart.Metadata.Version {
		return false
	}
	return sameValues(last.Config, req.values)
}

// sameValues compares values as JSON would carry them.
func sameValues(a, b map[string]any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var ua, ub any
	if json.Unmarshal(ja, &ua) != nil || json.Unmarshal(jb, &ub) != nil {
		return false
	}
	return reflect.DeepEqual(ua, ub)
}

func (r *Releases) remember(req *request, manifest string) {
	r.mu.Lock()
	r.deployed[req.releaseID] = deployedRelease{inputs: req.inputs, manifest: manifest}
	r.mu.Unlock()
}

func (r *Releases) forgetRelease(id types.NamespacedName) {
	r.mu.Lock()
	delete(r.deployed, id)
	r.mu.Unlock()
}

// clientsFor returns the clients a Bundle's release operations use: the
// target cluster's, or those impersonating the account the Bundle acts as
// (in.Access); nil offline.
func (r *Releases) clientsFor(in manifests.Input) (*clusters.Clients, error) {
	sa := in.Access.ServiceAccount
	if r.opts.Target == nil || in.Access.Agent() {
		return r.opts.Target, nil
	}
	if r.opts.ActAs == nil {
		return nil, fmt.Errorf("serviceAccountName %s: this agent cannot impersonate", sa)
	}
	c, err := r.opts.ActAs(sa)
	if err != nil {
		return nil, fmt.Errorf("serviceAccountName %s: %w", sa, err)
	}
	return c, nil
}

// configuration is a Helm action configuration for one operation on the
// releases of namespace ns: records in Secrets there (Helm's default),
// the clients the Bundle acts as (nil: in memory, offline), this agent's
// logger.
func (r *Releases) configuration(clients *clusters.Clients, ns string, maxHistory int) *action.Configuration {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(logr.ToSlogHandler(r.opts.Logger.V(2))))
	cfg.HookOutputFunc = func(_, _, _ string) io.Writer { return io.Discard }
	if clients == nil {
		cfg.Releases = storage.Init(driver.NewMemory())
		return cfg
	}
	kc := kube.New(clients)
	kc.Namespace = ns // Init leaves it unset: objects without one would go to "default"
	cfg.RESTClientGetter = clients
	cfg.KubeClient = kc
	cfg.Releases = storage.Init(driver.NewSecrets(clients.Kube.CoreV1().Secrets(ns)))
	cfg.Releases.MaxHistory = maxHistory
	return cfg
}

// run installs or upgrades the release. A release left pending by an
// agent that died during an operation is marked failed first, so that
// the upgrade can proceed; one pending from another client is waited for
// until its operation's timeout has passed.
func (r *Releases) run(ctx context.Context, cfg *action.Configuration, req *request, last *release.Release) (*release.Release, error) {
	if err := r.recoverPending(cfg, req, last); err != nil {
		return nil, err
	}
	post := &stamper{release: req.name, namespace: req.ns, maxObjects: req.in.Limits.OrDefault().Objects,
		prepare: func(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			if r.opts.Prepare == nil {
				return obj, nil
			}
			return r.opts.Prepare(req.in.Bundle, req.in.Spec, obj)
		},
		owner: func(obj *unstructured.Unstructured) (metav1.Object, error) { return existing(ctx, req.clients, obj) }}
	h := req.in.Spec.Helm
	wait := kube.HookOnlyStrategy
	if h.Wait || h.WaitForJobs {
		wait = kube.StatusWatcherStrategy
	}
	waitOpts := []kube.WaitOption{kube.WithWaitContext(ctx)}
	labels := map[string]string{InputsLabel: req.inputs, OwnerLabel: req.owner}
	force := req.in.Spec.Drift.ForceEnabled()
	var rel any
	var err error
	if last == nil || last.Info == nil || last.Info.Status == common.StatusUninstalled {
		i := action.NewInstall(cfg)
		i.ReleaseName, i.Namespace, i.Labels = req.name, req.ns, labels
		i.ServerSideApply, i.ForceConflicts = true, force
		i.WaitStrategy, i.WaitOptions, i.WaitForJobs, i.Timeout = wait, waitOpts, h.WaitForJobs, req.timeout
		i.RollbackOnFailure, i.TakeOwnership, i.SkipCRDs = h.Atomic, h.TakeOwnership || req.in.Spec.Adopt, h.SkipCRDs
		i.DisableOpenAPIValidation = true // the apply is validated by the server (fieldValidation=Strict)
		i.PostRenderer, i.PostRenderStrategy = post, action.PostRenderStrategyNoHooks
		i.Replace = last != nil
		// Creating the namespace is a cluster-scoped write: only the agent
		// makes it; a Bundle's account installs into a namespace that exists.
		i.CreateNamespace = req.in.Access.Agent()
		i.Description = "Install complete (driftwatch)"
		rel, err = i.RunWithContext(ctx, req.chart.chart, req.values)
	} else {
		u := action.NewUpgrade(cfg)
		u.Namespace, u.Labels = req.ns, labels
		u.ServerSideApply, u.ForceConflicts = "true", force // never "auto": a Helm 3 release would go client-side
		u.WaitStrategy, u.WaitOptions, u.WaitForJobs, u.Timeout = wait, waitOpts, h.WaitForJobs, req.timeout
		u.RollbackOnFailure, u.TakeOwnership, u.SkipCRDs = h.Atomic, h.TakeOwnership || req.in.Spec.Adopt, h.SkipCRDs
		u.MaxHistory, u.ResetValues = req.maxHist, true // the Bundle's values, never the last release's
		u.DisableOpenAPIValidation = true
		u.PostRenderer, u.PostRenderStrategy = post, action.PostRenderStrategyNoHooks
		u.Description = "Upgrade complete (driftwatch)"
		rel, err = u.RunWithContext(ctx, req.name, req.chart.chart, req.values)
	}
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", req.ns, req.name, err)
	}
	return asRelease(rel, req)
}

// recoverPending marks failed a release that an agent left pending when
// it died during an operation, so that the upgrade can proceed; one
// pending from another client is waited for until its operation's timeout
// has passed.
func (r *Releases) recoverPending(cfg *action.Configuration, req *request, last *release.Release) error {
	if last == nil || last.Info == nil || !last.Info.Status.IsPending() {
		return nil
	}
	_, ours := last.Labels[InputsLabel]
	if age := time.Since(last.Info.LastDeployed); !ours && age < req.timeout {
		return fmt.Errorf("release %s/%s is %s by another client since %s; waiting until its timeout (%s) has passed",
			req.ns, req.name, last.Info.Status, last.Info.LastDeployed.Format(time.RFC3339), req.timeout)
	}
	r.opts.Logger.Info("Recovering a release left pending", "release", req.releaseID, "status", last.Info.Status, "revision", last.Version)
	last.SetStatus(common.StatusFailed, fmt.Sprintf("interrupted while %s; recovered by driftwatch", last.Info.Status))
	if err := cfg.Releases.Update(last); err != nil {
		return fmt.Errorf("release %s/%s: marking the interrupted revision %d failed: %w", req.ns, req.name, last.Version, err)
	}
	return nil
}

// template renders the chart as an install would, without a cluster.
func (r *Releases) template(ctx context.Context, req *request) (*release.Release, error) {
	cfg := r.configuration(req.clients, req.ns, req.maxHist)
	i := action.NewInstall(cfg)
	i.ReleaseName, i.Namespace = req.name, req.ns
	i.DryRunStrategy = action.DryRunClient
	i.Replace = true
	i.SkipCRDs = req.in.Spec.Helm.SkipCRDs
	rel, err := i.RunWithContext(ctx, req.chart.chart, req.values)
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", req.ns, req.name, err)
	}
	return asRelease(rel, req)
}

// Uninstall implements manifests.Uninstaller: it uninstalls the Bundle's
// release, hooks and resource policies as Helm defines them. A release
// that is not there is no error.
func (r *Releases) Uninstall(ctx context.Context, in manifests.Input) error {
	if r.opts.Template {
		return nil
	}
	h := in.Spec.Helm
	name, ns := h.ReleaseNameFor(in.Bundle.Name), in.Spec.ReleaseNamespace()
	clients, err := r.clientsFor(in)
	if err != nil {
		return err
	}
	cfg := r.configuration(clients, ns, 0)
	last, err := lastRelease(cfg, &request{name: name, ns: ns})
	if err != nil {
		return err
	}
	if last == nil || last.Labels[OwnerLabel] != ownerOf(in.Bundle) {
		// Not there, or another Bundle's (or nobody's): not ours to remove.
		r.forgetRelease(types.NamespacedName{Namespace: ns, Name: name})
		return nil
	}
	u := action.NewUninstall(cfg)
	u.WaitStrategy, u.WaitOptions, u.Timeout = kube.HookOnlyStrategy, []kube.WaitOption{kube.WithWaitContext(ctx)}, timeoutOf(h)
	u.DeletionPropagation = string(metav1.DeletePropagationBackground)
	u.IgnoreNotFound = true
	_, err = u.Run(name)
	r.forgetRelease(types.NamespacedName{Namespace: ns, Name: name})
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return fmt.Errorf("uninstalling release %s/%s: %w", ns, name, err)
	}
	return nil
}

// credentials reads the Bundle's repository or registry credentials from
// its own namespace: as the Bundle's account (clients) in one cluster, with
// the agent's source identity in upstream mode (the Secret is then in the
// source cluster, where the account does not exist).
func (r *Releases) credentials(ctx context.Context, in manifests.Input, clients *clusters.Clients) (*credentials, error) {
	name := in.Spec.Helm.CredentialsSecret
	if name == "" {
		return nil, nil
	}
	src := clients
	if r.opts.Source != nil {
		src = r.opts.Source()
	}
	if src == nil {
		return nil, errors.New("spec.helm.credentialsSecret needs the cluster: give --kubeconfig")
	}
	sec, err := src.Kube.CoreV1().Secrets(in.Bundle.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("spec.helm.credentialsSecret: Secret %s/%s not found", in.Bundle.Namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("spec.helm.credentialsSecret %s/%s: %w", in.Bundle.Namespace, name, err)
	}
	return &credentials{username: string(sec.Data["username"]), password: string(sec.Data["password"]), ca: sec.Data["ca.crt"]}, nil
}

// existing returns the metadata of obj as it is in the cluster, read with
// the Bundle's clients; nil when it does not exist or offline.
func existing(ctx context.Context, clients *clusters.Clients, obj *unstructured.Unstructured) (metav1.Object, error) {
	if clients == nil || clients.Mapper == nil {
		return nil, nil
	}
	gvk := obj.GroupVersionKind()
	m, err := clients.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil // a kind the chart itself brings: nothing exists yet
	}
	ri := clients.Metadata.Resource(m.Resource)
	var got metav1.Object
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		got, err = ri.Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
	} else {
		got, err = ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return got, nil
}
