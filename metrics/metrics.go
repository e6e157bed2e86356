package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds every driftwatch metric. Object names never become label
// values: their cardinality is unbounded; they go to status and events.
type Metrics struct {
	BundleReady            *prometheus.GaugeVec
	BundleResources        *prometheus.GaugeVec
	BundleLastSync         *prometheus.GaugeVec
	DriftDetected          *prometheus.CounterVec
	DriftCorrections       *prometheus.CounterVec
	DriftOverrides         *prometheus.CounterVec
	DriftCorrectionSeconds prometheus.Histogram
	ApplyConflicts         *prometheus.CounterVec
	FieldFights            *prometheus.CounterVec
	ApplyDuration          *prometheus.HistogramVec
	WatchedObjects         *WatchedObjects
	SourceConnected        prometheus.Gauge
	SourceLastContact      prometheus.Gauge
	PodCrashes             *prometheus.CounterVec
	CredentialReloads      *prometheus.CounterVec
}

// Label values of BundleResources' state label.
const (
	StateReady    = "ready"
	StateNotReady = "not_ready"
	StateMissing  = "missing"
	StateDrifted  = "drifted"
	StateConflict = "conflict"
	StateFailed   = "failed"
)

// Cluster label values of CredentialReloads.
const (
	ClusterSource = "source"
	ClusterTarget = "target"
)

// Result label values.
const (
	ResultSuccess = "success"
	ResultError   = "error"
)

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	bundle := []string{"namespace", "bundle"}
	object := []string{"namespace", "bundle", "group", "kind"}
	m := &Metrics{
		BundleReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "driftwatch_bundle_ready", Help: "Whether the bundle is ready (1) or not (0).",
		}, bundle),
		BundleResources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "driftwatch_bundle_resources", Help: "The bundle's objects by state.",
		}, append(bundle, "state")),
		BundleLastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "driftwatch_bundle_last_sync_timestamp_seconds", Help: "When the bundle was last synced, as a Unix time.",
		}, bundle),
		DriftDetected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_drift_detected_total", Help: "Drift detected on owned objects, by the field manager that caused it.",
		}, append(object, "manager")),
		DriftCorrections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_drift_corrections_total", Help: "Drift corrections, by result.",
		}, append(object, "result")),
		DriftOverrides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_drift_overrides_total", Help: "Drift left in place on purpose: the object carries driftwatch.io/override (break-glass), by the field manager that made it.",
		}, append(object, "manager")),
		DriftCorrectionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "driftwatch_drift_correction_seconds", Help: "Time from a drift event received to the correction applied.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		ApplyConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_apply_conflicts_total", Help: "Server-side apply conflicts with other field managers.",
		}, append(object, "manager")),
		FieldFights: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_field_fights_total", Help: "Fields taken again and again by the same other manager (fights detected).",
		}, append(object, "manager")),
		ApplyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "driftwatch_apply_duration_seconds", Help: "Duration of server-side apply requests.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
		}, []string{"result"}),
		WatchedObjects: &WatchedObjects{desc: prometheus.NewDesc("driftwatch_watched_objects",
			"Owned objects in the informer caches.", []string{"group", "version", "resource"}, nil)},
		SourceConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "driftwatch_source_connected", Help: "Whether the source cluster answers (1) or not (0): its last request got a response, not a connection error, 401 or 403.",
		}),
		SourceLastContact: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "driftwatch_source_last_contact_timestamp_seconds", Help: "When the source cluster last answered a request, as a Unix time.",
		}),
		PodCrashes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_pod_crashes_total", Help: "Crashes of Pods behind owned objects (failed containers, CrashLoopBackOff, OOMKilled, failed or evicted Pods), each failed run once.",
		}, append(bundle, "reason")),
		CredentialReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "driftwatch_credential_reloads_total", Help: "Changed credentials of a cluster read at run time: success (new clients in use) or error (not usable; the current ones kept).",
		}, []string{"cluster", "result"}),
	}
	m.register(reg)
	return m
}

// register registers every metric with reg; the series that exist from
// the start, so that a rate is 0, not absent, are made.
func (m *Metrics) register(reg prometheus.Registerer) {
	for _, c := range []string{ClusterSource, ClusterTarget} {
		m.CredentialReloads.WithLabelValues(c, ResultSuccess)
		m.CredentialReloads.WithLabelValues(c, ResultError)
	}
	reg.MustRegister(m.BundleReady, m.BundleResources, m.BundleLastSync, m.DriftDetected, m.DriftCorrections,
		m.DriftOverrides, m.DriftCorrectionSeconds, m.ApplyConflicts, m.FieldFights, m.ApplyDuration, m.WatchedObjects, m.SourceConnected,
		m.SourceLastContact, m.PodCrashes, m.CredentialReloads)
}

// ForgetBundle deletes every series of a deleted bundle.
func (m *Metrics) ForgetBundle(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "bundle": name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.BundleReady, m.BundleResources, m.BundleLastSync, m.DriftDetected, m.DriftCorrections,
		m.DriftOverrides, m.ApplyConflicts, m.FieldFights, m.PodCrashes,
	} {
		v.DeletePartialMatch(l)
	}
}

// SourceContact records an answer of the source cluster (ok), or a
// request it did not answer usefully (a connection error, 401 or 403).
func (m *Metrics) SourceContact(ok bool) {
	if ok {
		m.SourceConnected.Set(1)
		m.SourceLastContact.SetToCurrentTime()
		return
	}
	m.SourceConnected.Set(0)
}

// Reloaded counts a reload of a cluster's changed credentials.
func (m *Metrics) Reloaded(cluster, result string) {
	m.CredentialReloads.WithLabelValues(cluster, result).Inc()
}

// WatchedCount is the number of objects in one informer's cache.
type WatchedCount struct {
	Group, Version, Resource string
	Objects                  int
}

// WatchedObjects is driftwatch_watched_objects, read from the informer
// caches when scraped: a gauge set at the end of a sync missed the objects
// whose events arrived after it.
type WatchedObjects struct {
	desc  *prometheus.Desc
	count atomic.Pointer[WatchedCounter]
}

// WatchedCounter reports the objects in each informer's cache when the
// gauge is scraped.
type WatchedCounter interface {
	WatchedCounts() []WatchedCount
}

// Source sets what the gauge reads.
func (w *WatchedObjects) Source(c WatchedCounter) { w.count.Store(&c) }

// Describe implements prometheus.Collector.
func (w *WatchedObjects) Describe(ch chan<- *prometheus.Desc) { ch <- w.desc }

// Collect implements prometheus.Collector.
func (w *WatchedObjects) Collect(ch chan<- prometheus.Metric) {
	src := w.count.Load()
	if src == nil {
		return
	}
	for _, c := range (*src).WatchedCounts() {
		ch <- prometheus.MustNewConstMetric(w.desc, prometheus.GaugeValue, float64(c.Objects), c.Group, c.Version, c.Resource)
	}
}
