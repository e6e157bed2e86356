package main

// Helm releases (issue 16), in one run against one control plane:
//
//   - install: a chart of -helm-objects ConfigMaps installed as a release
//     by the agent (Bundle created → Synced) and by the real helm CLI
//     (`helm install`, process start to exit), alternately, -helm-rounds
//     times each, each into a namespace of its own;
//   - the API requests of one drift correction of a chart's object, from
//     the audit log, with the release's revisions before and after;
//   - edit → reverted for the chart's objects, interleaved with the floor's.
//
//	bin/bench -scenario helm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// benchChart writes a chart of n ConfigMaps, each with data.key, into dir
// and returns its files as Bundle resources.
func benchChart(dir string, n int) ([]manifests.Resource, error) {
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: bench\nversion: 1.0.0\n",
		"values.yaml": fmt.Sprintf("count: %d\n", n),
		"templates/configmaps.yaml": `{{- range $i := until (int .Values.count) }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "chart-%04d" $i }}
data:
  key: {{ printf "value-%d" $i | quote }}
{{- end }}
`,
	}
	var res []manifests.Resource
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
		res = append(res, manifests.Resource{Name: "bench/" + name, Content: content})
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, nil
}

func runHelm(ctx context.Context, o options) error {
	w := newWorkload(0, 0, 1, 1)
	e, err := startEnv(ctx, w, os.Stderr)
	if err != nil {
		return err
	}
	keep := true
	defer func() { e.stop(keep || o.keep) }()
	chartDir := filepath.Join(e.dir, "chart")
	res, err := benchChart(chartDir, o.helmObjects)
	if err != nil {
		return err
	}
	a, err := startAgent(e.c, o.agentBin, filepath.Join(e.dir, "agent.log"), o.agentEnv, "--chart-cache-dir", filepath.Join(e.dir, "charts"))
	if err != nil {
		return err
	}
	defer a.stop()
	if err := a.waitReady(ctx); err != nil {
		return err
	}

	// Install, alternately.
	var agentTimes, cliTimes []time.Duration
	for r := 0; r < o.helmRounds; r++ {
		dwNS, cliNS := fmt.Sprintf("helm-dw-%d", r), fmt.Sprintf("helm-cli-%d", r)
		for _, ns := range []string{dwNS, cliNS} {
			if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		d, err := agentInstall(ctx, e, fmt.Sprintf("chart-%d", r), dwNS, res, o.helmObjects)
		if err != nil {
			return fmt.Errorf("round %d, the agent: %w", r, err)
		}
		agentTimes = append(agentTimes, d)
		start := time.Now()
		cmd := exec.CommandContext(ctx, e.c.Bin("helm"), "--kubeconfig", e.c.Kubeconfig(agentUser), "install", "bench", chartDir, "-n", cliNS)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+e.dir, "HELM_CONFIG_HOME="+e.dir, "HELM_DATA_HOME="+e.dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("round %d, helm install: %v\n%s", r, err, out)
		}
		cliTimes = append(cliTimes, time.Since(start))
	}

	// One correction at a time: its requests, then edit → reverted.
	obs, err := startObserver(ctx, e.kube)
	if err != nil {
		return err
	}
	defer obs.close()
	const ns = "helm-dw-0"
	revisions := func() (int, error) {
		s, err := e.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		if err != nil {
			return 0, err
		}
		return len(s.Items), nil
	}
	before, err := revisions()
	if err != nil {
		return err
	}
	offset, err := e.audit.offset()
	if err != nil {
		return err
	}
	from := time.Now()
	const counted = 20
	for k := 0; k < counted; k++ {
		i := (k * 37) % o.helmObjects
		ed := edit{kind: editCMPatch, key: objKey{"ConfigMap", ns, fmt.Sprintf("chart-%04d", i)}, value: fmt.Sprintf("value-%d", i), namespace: ns}
		wt, _, err := ed.do(ctx, e.kube, obs, 1_000_000+k)
		if err != nil {
			return err
		}
		if _, err := wt.wait(ctx, ed.key, restoreTimeout); err != nil {
			return fmt.Errorf("correction %d: %w", k, err)
		}
	}
	quietSince, err := e.audit.waitQuiet(ctx, offset, agentUser, from, 3*time.Second, time.Minute)
	if err != nil {
		return err
	}
	reqs, err := e.audit.count(ctx, offset, agentUser, from, quietSince.Add(time.Millisecond))
	if err != nil {
		return err
	}
	after, err := revisions()
	if err != nil {
		return err
	}

	edits, err := editsAgainstFloor(ctx, e, obs, "helm-dw-1", o.helmObjects, func(i int) string { return fmt.Sprintf("chart-%04d", i) }, o)
	if err != nil {
		return err
	}
	keep = false

	med := func(ds []time.Duration) time.Duration {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	fmt.Printf("\nHelm releases, %d-object chart (%s, commit %s)\n", o.helmObjects, time.Now().Format("2006-01-02 15:04"), commit())
	fmt.Printf("  install, median of %d: driftwatch %s (Bundle created → Synced), helm install %s (process start → exit): %.2f×\n",
		o.helmRounds, med(agentTimes).Round(time.Millisecond), med(cliTimes).Round(time.Millisecond),
		med(agentTimes).Seconds()/med(cliTimes).Seconds())
	fmt.Printf("    each: driftwatch %v; helm %v\n", roundAll(agentTimes), roundAll(cliTimes))
	fmt.Printf("  %d corrections of a chart's ConfigMap: agent requests %s; per correction: %.2f patch configmaps, %.2f get, %.2f list\n",
		counted, reqs.summary(), float64(reqs.ByVerb["patch configmaps"])/counted, float64(reqs.Get)/counted, float64(reqs.List)/counted)
	fmt.Printf("  release revisions (Secrets) before %d, after %d\n", before, after)
	fmt.Println(edits)
	if after != before {
		return fmt.Errorf("corrections made release revisions: %d Secrets before, %d after", before, after)
	}
	return nil
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// agentInstall creates a Bundle of the chart releasing into ns and returns
// the time until it reports Synced with every object applied.
func agentInstall(ctx context.Context, e *env, name, ns string, res []manifests.Resource, n int) (time.Duration, error) {
	spec := manifests.BundleSpec{DefaultNamespace: ns, Resources: res, Helm: &manifests.HelmSpec{Chart: "bench", ReleaseName: "bench"}}
	return agentInstallSpec(ctx, e, name, spec, n)
}

// agentInstallSpec creates a Bundle of spec and returns the time until it
// reports Synced with its n objects applied.
func agentInstallSpec(ctx context.Context, e *env, name string, spec manifests.BundleSpec, n int) (time.Duration, error) {
	body, err := yaml.Marshal(spec)
	if err != nil {
		return 0, err
	}
	var specMap map[string]any
	if err := yaml.Unmarshal(body, &specMap); err != nil {
		return 0, err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "driftwatch.io/v1alpha1", "kind": "Bundle",
		"metadata": map[string]any{"name": name, "namespace": bundleNamespace}, "spec": specMap}}
	start := time.Now()
	if _, err := e.dyn.Resource(manifests.BundleGVR).Namespace(bundleNamespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		b, err := e.dyn.Resource(manifests.BundleGVR).Namespace(bundleNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		desired, _, _ := unstructured.NestedInt64(b.Object, "status", "summary", "desired")
		observed, _, _ := unstructured.NestedInt64(b.Object, "status", "observedGeneration")
		st, _, _ := unstructured.NestedSlice(b.Object, "status", "conditions")
		last = fmt.Sprint(st)
		return conditionTrue(b, manifests.ConditionSynced) && observed == b.GetGeneration() && desired == int64(n), nil
	})
	if err != nil {
		return 0, fmt.Errorf("bundle %s never Synced: %w; last %s", name, err, strings.TrimSpace(last))
	}
	return time.Since(start), nil
}
