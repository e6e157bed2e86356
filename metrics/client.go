package metrics

import (
	"context"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientmetrics "k8s.io/client-go/tools/metrics"
	"k8s.io/client-go/util/workqueue"
)

// Queues is a workqueue.MetricsProvider that publishes every work queue's
// depth, adds, latency, work duration, unfinished work and retries, under
// the names controller-runtime uses (workqueue_*, label name), on the
// registry given to NewQueues.
type Queues struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, duration          *prometheus.HistogramVec
}

// NewQueues creates the work-queue metrics and registers them with reg.
func NewQueues(reg prometheus.Registerer) *Queues {
	name := []string{"name"}
	buckets := prometheus.ExponentialBuckets(10e-9, 10, 12)
	q := &Queues{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_depth", Help: "Current depth of the work queue."}, name),
		adds:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_adds_total", Help: "Adds handled by the work queue."}, name),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_queue_duration_seconds",
			Help: "How long an item stays in the work queue before it is requested.", Buckets: buckets}, name),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_work_duration_seconds",
			Help: "How long processing an item from the work queue takes.", Buckets: buckets}, name),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_unfinished_work_seconds",
			Help: "Seconds of work in progress that no observation of work_duration counts yet."}, name),
		longest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_longest_running_processor_seconds",
			Help: "Seconds the longest running processor of the work queue has been running."}, name),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_retries_total", Help: "Retries handled by the work queue."}, name),
	}
	reg.MustRegister(q.depth, q.adds, q.latency, q.duration, q.unfinished, q.longest, q.retries)
	return q
}

var _ workqueue.MetricsProvider = (*Queues)(nil)

func (q *Queues) NewDepthMetric(name string) workqueue.GaugeMetric {
	return q.depth.WithLabelValues(name)
}
func (q *Queues) NewAddsMetric(name string) workqueue.CounterMetric {
	return q.adds.WithLabelValues(name)
}
func (q *Queues) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return q.latency.WithLabelValues(name)
}
func (q *Queues) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return q.duration.WithLabelValues(name)
}
func (q *Queues) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.unfinished.WithLabelValues(name)
}
func (q *Queues) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.longest.WithLabelValues(name)
}
func (q *Queues) NewRetriesMetric(name string) workqueue.CounterMetric {
	return q.retries.WithLabelValues(name)
}

// RegisterClientGo publishes client-go's REST client metrics — requests by
// method and code, request latency by verb — on reg. The agent calls it
// once, from main, before any client is used. client-go's Register takes
// one registration per process and ignores the rest, and
// controller-runtime (linked through Helm) registers its own at init:
// the adapters are therefore set directly, which is what Register does.
func RegisterClientGo(reg prometheus.Registerer) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rest_client_requests_total",
		Help: "HTTP requests of the Kubernetes clients, by status code, method and host."}, []string{"code", "method", "host"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rest_client_request_duration_seconds",
		Help:    "Request latency of the Kubernetes clients, by verb (the path is left out: it names objects).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"verb", "host"})
	reg.MustRegister(requests, latency)
	clientmetrics.RequestResult = resultAdapter{requests}
	clientmetrics.RequestLatency = latencyAdapter{latency}
}

type resultAdapter struct{ v *prometheus.CounterVec }

func (a resultAdapter) Increment(_ context.Context, code, method, host string) {
	a.v.WithLabelValues(code, method, host).Inc()
}

type latencyAdapter struct{ v *prometheus.HistogramVec }

func (a latencyAdapter) Observe(_ context.Context, verb string, u url.URL, latency time.Duration) {
	a.v.WithLabelValues(verb, u.Host).Observe(latency.Seconds())
}
