package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/drift"
	"github.com/driftwatch/driftwatch/manifests"
)

// kustomizeExample is examples/kustomize.yaml's spec, its namespace
// (which the Bundle declares) replaced by ns.
func kustomizeExample(t *testing.T, ns string) manifests.BundleSpec {
	t.Helper()
	data, err := os.ReadFile(repoPath("examples", "kustomize.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var b manifests.Bundle
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(string(data), "shop-k", ns)), &b); err != nil {
		t.Fatal(err)
	}
	return b.Spec
}

// setClusterLabels writes the labels of the driftwatch-cluster ConfigMap
// in the agent's namespace.
func setClusterLabels(t *testing.T, ns string, labels map[string]string) {
	t.Helper()
	cms := cp.Client().CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(t.Context(), drift.ClusterConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: drift.ClusterConfigMap, Labels: labels}}, metav1.CreateOptions{})
	} else if err == nil {
		cm.Labels = labels
		_, err = cms.Update(t.Context(), cm, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// metric returns the value of one series in a scrape, 0 if absent.
func metric(scrape, series string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// A base and dev/prod overlays: the cluster's labels (flags, then the
// cluster ConfigMap, at runtime) choose the overlay; what no longer
// belongs is pruned; doNotDeploy removes everything; a label change that
// changes nothing writes nothing; Kustomize-rendered drift is reverted.
func TestKustomizeOverlaysFollowTheClusterLabels(t *testing.T) {
	ns, a := setup(t, "--cluster-label", "env=dev", "--cluster-name", "edge-1")
	app := ns + "-k" // the Bundle's own namespace, which it declares
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().Namespaces().Delete(context.WithoutCancel(t.Context()), app, metav1.DeleteOptions{})
	})
	createBundle(t, ns, "shop", specYAML(t, kustomizeExample(t, app)))
	waitBundle(t, ns, "shop", "Ready", ready)
	waitMode(t, app, "settings", "dev")
	if _, ok := configMap(t, app, "prod-only"); ok {
		t.Fatal("the prod overlay's ConfigMap on a dev cluster")
	}

	// The ConfigMap's labels win over the flags': prod.
	setClusterLabels(t, ns, map[string]string{"env": "prod"})
	waitMode(t, app, "settings", "prod")
	waitFor(t, "prod-only created, 3 replicas, the namespace labelled", func() (bool, string) {
		_, ok := configMap(t, app, "prod-only")
		d := deployment(t, app, "web")
		n, err := cp.Client().CoreV1().Namespaces().Get(t.Context(), app, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ok && *d.Spec.Replicas == 3 && n.Labels["tier"] == "production", fmt.Sprintf("prod-only %v, replicas %d, labels %v", ok, *d.Spec.Replicas, n.Labels)
	})
	waitBundle(t, ns, "shop", "Ready, customization prod", func(b *manifests.Bundle) bool {
		return ready(b) && b.Status.Customization == "prod"
	})

	// Drift on a Kustomize-rendered object is reverted.
	kubectl(t, "-n", app, "scale", "deployment/web", "--replicas=7")
	waitFor(t, "the scale reverted", func() (bool, string) {
		d := deployment(t, app, "web")
		return *d.Spec.Replicas == 3, fmt.Sprint(*d.Spec.Replicas)
	})

	// A label that changes no result: every Bundle is rendered again and
	// nothing is written.
	settings, _ := configMap(t, app, "settings")
	before := metric(a.scrape(t), `workqueue_adds_total{name="bundles"}`)
	setClusterLabels(t, ns, map[string]string{"env": "prod", "team": "payments"})
	waitFor(t, "the Bundle rendered again and the queue idle", func() (bool, string) {
		s := a.scrape(t)
		adds, depth, busy := metric(s, `workqueue_adds_total{name="bundles"}`), metric(s, `workqueue_depth{name="bundles"}`),
			metric(s, `workqueue_unfinished_work_seconds{name="bundles"}`)
		return adds > before && depth == 0 && busy == 0, fmt.Sprintf("adds %v (before %v), depth %v, unfinished %v", adds, before, depth, busy)
	})
	if after, _ := configMap(t, app, "settings"); after.ResourceVersion != settings.ResourceVersion {
		t.Errorf("a label change that changes no result rewrote settings (%s → %s)", settings.ResourceVersion, after.ResourceVersion)
	}

	// Back to dev: the prod-only ConfigMap is pruned.
	setClusterLabels(t, ns, map[string]string{"env": "dev"})
	waitMode(t, app, "settings", "dev")
	waitFor(t, "prod-only pruned", func() (bool, string) {
		_, ok := configMap(t, app, "prod-only")
		return !ok, "still there"
	})
	// doNotDeploy: everything the Bundle applied goes, its namespace too.
	setClusterLabels(t, ns, map[string]string{"env": "lab"})
	waitFor(t, "the Bundle's objects removed", func() (bool, string) {
		_, ok := configMap(t, app, "settings")
		_, err := cp.Client().AppsV1().Deployments(app).Get(t.Context(), "web", metav1.GetOptions{})
		return !ok && apierrors.IsNotFound(err), fmt.Sprintf("settings %v, deployment %v", ok, err)
	})
	waitBundle(t, ns, "shop", "customization lab, nothing desired", func(b *manifests.Bundle) bool {
		return b.Status.Customization == "lab" && b.Status.Summary.Desired == 0
	})
}

// waitConfigMapData waits for the ConfigMap's data.mode.
func waitMode(t *testing.T, ns, name, mode string) {
	t.Helper()
	waitConfigMap(t, ns, name, "mode", mode)
}

// A remote base is refused, naming it; a broken patch names its file;
// the other Bundles go on.
func TestKustomizeBadInputIsReported(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "remote", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Kustomize: &manifests.KustomizeSpec{Dir: "."},
		Resources: []manifests.Resource{{Name: "kustomization.yaml", Content: "resources: ['https://github.com/example/app//deploy?ref=main']\n"}}}))
	createBundle(t, ns, "patch", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Kustomize: &manifests.KustomizeSpec{Dir: "app"},
		Resources: []manifests.Resource{
			{Name: "app/kustomization.yaml", Content: "resources: [cm.yaml]\npatches: [{path: broken-patch.yaml}]\n"},
			{Name: "app/cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"},
			{Name: "app/broken-patch.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nothere}\ndata: {k: v}\n"}}}))
	createBundle(t, ns, "fine", webBundle("defaultNamespace: "+ns))
	syncedFalse := func(part string) func(*manifests.Bundle) bool {
		return func(b *manifests.Bundle) bool {
			c := condition(b, manifests.ConditionSynced)
			return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, part)
		}
	}
	waitBundle(t, ns, "remote", "the URL refused", syncedFalse("https://github.com/example/app//deploy?ref=main"))
	waitBundle(t, ns, "patch", "the patch's file named", syncedFalse("broken-patch.yaml"))
	waitBundle(t, ns, "fine", "Ready", ready)
}

// dependsOn holds a Bundle until its dependency is Ready; a cycle is
// reported, not waited on for ever.
func TestDependsOnHoldsABundleUntilAnotherIsReady(t *testing.T) {
	ns, _ := setup(t)
	app := manifests.BundleSpec{DefaultNamespace: ns, DependsOn: []manifests.Dependency{{Name: "db"}}, Resources: []manifests.Resource{{Name: "app.yaml",
		Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {mode: app}\n"}}}
	createBundle(t, ns, "app", specYAML(t, app))
	waitBundle(t, ns, "app", "waiting for db", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Reason == "DependencyNotReady" && strings.Contains(c.Message, "db (not found)")
	})
	if _, ok := configMap(t, ns, "app-config"); ok {
		t.Fatal("applied before its dependency exists")
	}
	createBundle(t, ns, "db", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "db", "Ready", ready)
	waitBundle(t, ns, "app", "Ready once db is", ready)
	if _, ok := configMap(t, ns, "app-config"); !ok {
		t.Fatal("app-config not applied")
	}

	cyc := func(name, dep string) manifests.BundleSpec {
		return manifests.BundleSpec{DefaultNamespace: ns, DependsOn: []manifests.Dependency{{Name: dep}}, Resources: []manifests.Resource{{Name: "c.yaml",
			Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\n"}}}
	}
	createBundle(t, ns, "left", specYAML(t, cyc("left", "right")))
	createBundle(t, ns, "right", specYAML(t, cyc("right", "left")))
	cycle := regexp.MustCompile(`dependency cycle: (left → right → left|right → left → right)`)
	for _, n := range []string{"left", "right"} {
		waitBundle(t, ns, n, "the cycle reported", func(b *manifests.Bundle) bool {
			c := condition(b, manifests.ConditionSynced)
			return c != nil && cycle.MatchString(c.Message)
		})
	}
}
