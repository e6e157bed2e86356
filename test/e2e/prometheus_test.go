package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// TestPrometheusScrapesDashboardAndAlerts runs a real Prometheus (Debian's
// prometheus package) that scrapes a running agent and evaluates the
// shipped alert rules, while a scenario drifts objects, starts a fight,
// crashes a Pod, provokes a conflict and an apply error, and leaves a
// Bundle not ready. Then every PromQL expression of the dashboard and the
// rules must parse on that Prometheus, every dashboard expression must
// return data, and the drift and not-ready alerts must be pending or
// firing. promtool must find nothing wrong in the agent's exposition.
func TestPrometheusScrapesDashboardAndAlerts(t *testing.T) {
	for _, bin := range []string{"prometheus", "promtool", "python3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed (Debian: apt-get install prometheus python3; make test installs them): %v", bin, err)
		}
	}
	ns, agent := setup(t)
	prom := startPrometheus(t, strings.TrimPrefix(agent.metrics, "http://"))
	ctx := t.Context()
	client := cp.Client()

	// A Bundle that drifts again and again, fights, and crashes a Pod.
	// Six keys, each edited twice by one manager: twelve drifts in one
	// counter series, and no fight (that takes three of one field).
	spec := strings.Replace(webBundle("defaultNamespace: "+ns), "data: {mode: production}",
		"data: {mode: production, k0: v, k1: v, k2: v, k3: v, k4: v, k5: v}", 1)
	createBundle(t, ns, "web", spec)
	waitBundle(t, ns, "web", "Ready", ready)
	for i := range 12 {
		key := fmt.Sprintf("k%d", i%6)
		patch := fmt.Appendf(nil, `{"data":{%q:"edit-%d"}}`, key, i)
		if _, err := client.CoreV1().ConfigMaps(ns).Patch(ctx, "settings", types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: "e2e-editor"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ConfigMap restored", func() (bool, string) {
			cm, _ := configMap(t, ns, "settings")
			return cm != nil && cm.Data[key] == "v", fmt.Sprint(cm.Data)
		})
		if i == 0 {
			// A counter's first sample is its baseline: increase() counts
			// from there, as it would in production.
			waitFor(t, "Prometheus to see the first drift", func() (bool, string) {
				res, err := prom.query(`driftwatch_drift_detected_total{manager="e2e-editor"}`)
				return err == nil && len(res) == 1, fmt.Sprint(res, err)
			})
		}
	}
	for i := range 3 {
		kubectl(t, "-n", ns, "scale", "deployment/web", fmt.Sprintf("--replicas=%d", 5+i))
		waitFor(t, "the scale noticed", func() (bool, string) {
			line := grep(agent.scrape(t), `driftwatch_drift_detected_total{bundle="web",group="apps"`)
			return strings.HasSuffix(line, fmt.Sprintf(" %d", i+1)), line
		})
	}
	waitEvent(t, ns, "web", "FightDetected")
	// Crash a Pod of web that stays: the fight scaled the Deployment up,
	// and a Pod being removed may be gone before the patch. So once the
	// back-off has passed and web holds its 2 replicas again.
	waitFor(t, "web back to 2 replicas", func() (bool, string) {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == 2 && d.Status.Replicas == 2, fmt.Sprintf("spec %d, status %d", *d.Spec.Replicas, d.Status.Replicas)
	})
	waitFor(t, "a Pod of web made to crash", func() (bool, string) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			_, err := client.CoreV1().Pods(ns).Patch(ctx, p.Name, types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"pod-container-running-failed.stage.kwok.x-k8s.io":"true"}}}`), metav1.PatchOptions{})
			return err == nil, fmt.Sprint(err)
		}
		return false, fmt.Sprintf("%d Pods, all terminating", len(pods.Items))
	})
	waitEvent(t, ns, "web", "PodCrashed")

	// A conflict: another manager holds a field, and this Bundle does not force.
	if _, err := client.CoreV1().ConfigMaps(ns).Patch(ctx, "shared", types.ApplyPatchType,
		[]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shared"},"data":{"x":"1"}}`),
		metav1.PatchOptions{FieldManager: "other-tool"}); err != nil {
		t.Fatal(err)
	}
	createBundle(t, ns, "conflict", `
defaultNamespace: `+ns+`
adopt: true
drift: {force: false}
resources:
- name: cm.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: shared}
    data: {x: "2"}
`)
	// An object the API server rejects, and a Deployment that cannot roll out.
	createBundle(t, ns, "stuck", `
defaultNamespace: `+ns+`
resources:
- name: bad.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: Not_A_Valid_Name}
- name: app.yaml
  content: |
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: stuck}
    spec:
      replicas: 1
      selector: {matchLabels: {app: stuck}}
      template:
        metadata: {labels: {app: stuck}}
        spec:
          nodeSelector: {no-such-node: "true"}
          containers: [{name: c, image: busybox:1}]
`)
	waitFor(t, "the conflict and the apply error counted", func() (bool, string) {
		m := agent.scrape(t)
		return grep(m, "driftwatch_apply_conflicts_total{") != "" && grep(m, `driftwatch_apply_duration_seconds_count{result="error"} 0`) == "" &&
			grep(m, `driftwatch_bundle_ready{bundle="stuck"`) != "", grep(m, "driftwatch_apply_conflicts_total")
	})

	// Every series above is in Prometheus, with samples enough for rate().
	waitFor(t, "Prometheus to hold the scenario's series", func() (bool, string) {
		res, err := prom.query(`count(driftwatch_pod_crashes_total) * count(driftwatch_apply_conflicts_total) * count(count_over_time(driftwatch_field_fights_total[5m]) > 2)`)
		return err == nil && len(res) > 0, fmt.Sprint(res, err)
	})

	dash, err := exec.Command("python3", "../dashboard_exprs.py", "../../manifests/deploy/grafana-dashboard.json").Output()
	if err != nil {
		t.Fatalf("dashboard_exprs.py: %v", err)
	}
	exprs := strings.Split(strings.TrimSpace(string(dash)), "\n")
	if len(exprs) < 10 {
		t.Fatalf("only %d dashboard expressions", len(exprs))
	}
	for _, e := range exprs {
		waitFor(t, "data for the dashboard's "+e, func() (bool, string) {
			res, err := prom.query(e)
			if err != nil {
				return false, err.Error()
			}
			return len(res) > 0, "no series"
		})
	}
	rules := ruleExprs(t)
	for name, e := range rules {
		if _, err := prom.query(e); err != nil {
			t.Errorf("rule %s: %s: %v", name, e, err)
		}
	}
	t.Logf("%d dashboard and %d rule expressions evaluated on Prometheus", len(exprs), len(rules))

	waitFor(t, "DriftwatchBundleNotReady and DriftwatchDriftFlapping pending or firing", func() (bool, string) {
		alerts, err := prom.alerts()
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(alerts, "DriftwatchBundleNotReady/stuck") && strings.Contains(alerts, "DriftwatchDriftFlapping/web"), alerts
	})

	// The exposition itself: promtool's lint finds nothing.
	exposition := agent.scrape(t)
	var ours []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, "driftwatch_") && !strings.Contains(l, "_bucket{") {
			ours = append(ours, l)
		}
	}
	t.Logf("driftwatch's series after the scenario:\n%s", strings.Join(ours, "\n"))
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(exposition)
	if out, err := check.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics on the agent's /metrics: %v\n%s", err, out)
	}
}

// prometheus is a running Prometheus server.
type prometheus struct{ url string }

func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("../../manifests/deploy/prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
- job_name: driftwatch
  honor_labels: true
  static_configs: [{targets: [%q]}]
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // ended by the cleanup below
		logFile.Close()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", tail(string(b), 30))
		}
	})
	p := &prometheus{url: "http://" + addr}
	waitFor(t, "Prometheus to scrape the agent", func() (bool, string) {
		res, err := p.query(`up{job="driftwatch"} == 1`)
		return err == nil && len(res) == 1, fmt.Sprint(res, err)
	})
	return p
}

// query evaluates an instant query; an error means it failed or did not parse.
func (p *prometheus) query(q string) ([]json.RawMessage, error) {
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("%s", out.Error)
	}
	var res []json.RawMessage
	if err := json.Unmarshal(out.Data.Result, &res); err != nil {
		return []json.RawMessage{out.Data.Result}, nil // a scalar or string result
	}
	return res, nil
}

// alerts returns the pending and firing alerts as "name/bundle=state" words.
func (p *prometheus) alerts() (string, error) {
	resp, err := http.Get(p.url + "/api/v1/alerts")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	var words []string
	for _, a := range out.Data.Alerts {
		words = append(words, a.Labels["alertname"]+"/"+a.Labels["bundle"]+"="+a.State)
	}
	return strings.Join(words, " "), nil
}

// ruleExprs reads the shipped rules file: alert name → expression.
func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../manifests/deploy/prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert+r.Record] = r.Expr
		}
	}
	if len(out) < 7 {
		t.Fatalf("%d rules in prometheus-rules.yaml, want the 7 alerts", len(out))
	}
	return out
}
