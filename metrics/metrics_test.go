package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestForgetBundleRemovesOnlyItsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for _, b := range []string{"gone", "kept"} {
		m.BundleReady.WithLabelValues("ns", b).Set(1)
		m.DriftDetected.WithLabelValues("ns", b, "apps", "Deployment", "kubectl/scale").Inc()
		m.BundleResources.WithLabelValues("ns", b, StateReady).Set(3)
		m.PodCrashes.WithLabelValues("ns", b, "OOMKilled").Inc()
	}
	m.ForgetBundle("ns", "gone")
	want := `
# HELP driftwatch_bundle_ready Whether the bundle is ready (1) or not (0).
# TYPE driftwatch_bundle_ready gauge
driftwatch_bundle_ready{bundle="kept",namespace="ns"} 1
# HELP driftwatch_drift_detected_total Drift detected on owned objects, by the field manager that caused it.
# TYPE driftwatch_drift_detected_total counter
driftwatch_drift_detected_total{bundle="kept",group="apps",kind="Deployment",manager="kubectl/scale",namespace="ns"} 1
# HELP driftwatch_bundle_resources The bundle's objects by state.
# TYPE driftwatch_bundle_resources gauge
driftwatch_bundle_resources{bundle="kept",namespace="ns",state="ready"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"driftwatch_bundle_ready", "driftwatch_drift_detected_total", "driftwatch_bundle_resources"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 4+3+4 {
		// 4 kept series, the three unlabelled metrics (source_connected,
		// source_last_contact, drift_correction_seconds) and credential
		// reloads of both clusters by both results.
		t.Fatalf("after ForgetBundle: %d series (%v), want 11", n, err)
	}
}
