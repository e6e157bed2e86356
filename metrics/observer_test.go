package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSourceContactAndReloads(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.SourceContact(true)
	if v := testutil.ToFloat64(m.SourceConnected); v != 1 {
		t.Errorf("connected %v after an answer", v)
	}
	if v := testutil.ToFloat64(m.SourceLastContact); v <= 0 {
		t.Errorf("last contact %v after an answer", v)
	}
	last := testutil.ToFloat64(m.SourceLastContact)
	m.SourceContact(false)
	if v := testutil.ToFloat64(m.SourceConnected); v != 0 {
		t.Errorf("connected %v after a failed request", v)
	}
	if v := testutil.ToFloat64(m.SourceLastContact); v != last {
		t.Errorf("a failed request moved the last contact: %v → %v", last, v)
	}
	m.Reloaded(ClusterSource, ResultError)
	m.Reloaded(ClusterSource, ResultSuccess)
	m.Reloaded(ClusterSource, ResultSuccess)
	want := `
# HELP driftwatch_credential_reloads_total Changed credentials of a cluster read at run time: success (new clients in use) or error (not usable; the current ones kept).
# TYPE driftwatch_credential_reloads_total counter
driftwatch_credential_reloads_total{cluster="source",result="error"} 1
driftwatch_credential_reloads_total{cluster="source",result="success"} 2
driftwatch_credential_reloads_total{cluster="target",result="error"} 0
driftwatch_credential_reloads_total{cluster="target",result="success"} 0
`
	if err := testutil.CollectAndCompare(m.CredentialReloads, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
