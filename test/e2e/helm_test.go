package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// chartFiles returns the files of testdata/charts/<name> as Bundle
// resources named <name>/<path>: a chart directory in the Bundle.
func chartFiles(t *testing.T, name string) []manifests.Resource {
	t.Helper()
	var out []manifests.Resource
	root := filepath.Join("testdata", "charts", name)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, manifests.Resource{Name: name + "/" + filepath.ToSlash(rel), Content: string(data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// specYAML is a Bundle spec as the YAML createBundle takes.
func specYAML(t *testing.T, spec manifests.BundleSpec) string {
	t.Helper()
	b, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// helmCLI runs the real helm CLI (v4, built by tools/build.sh) as admin.
func helmCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(cp.Bin("helm"), append([]string{"--kubeconfig", cp.Kubeconfig(cluster.AdminUser)}, args...)...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// revision is one line of `helm history -o json`.
type revision struct {
	Revision    int    `json:"revision"`
	Status      string `json:"status"`
	Chart       string `json:"chart"`
	Description string `json:"description"`
}

func helmHistory(t *testing.T, ns, release string) []revision {
	t.Helper()
	var revs []revision
	if err := json.Unmarshal([]byte(helmCLI(t, "history", release, "-n", ns, "-o", "json")), &revs); err != nil {
		t.Fatal(err)
	}
	return revs
}

// waitRevisions waits until the release's history has n revisions, the
// last one deployed.
func waitRevisions(t *testing.T, ns, release string, n int) []revision {
	t.Helper()
	var revs []revision
	waitFor(t, fmt.Sprintf("release %s at revision %d, deployed", release, n), func() (bool, string) {
		revs = helmHistory(t, ns, release)
		return len(revs) == n && revs[n-1].Status == "deployed", fmt.Sprint(revs)
	})
	return revs
}

func waitConfigMap(t *testing.T, ns, name, key, want string) *corev1.ConfigMap {
	t.Helper()
	var cm *corev1.ConfigMap
	waitFor(t, fmt.Sprintf("configmap %s with %s=%q", name, key, want), func() (bool, string) {
		c, ok := configMap(t, ns, name)
		if !ok {
			return false, "not found"
		}
		cm = c
		return c.Data[key] == want, fmt.Sprint(c.Data)
	})
	return cm
}

// onlyAppliedBy checks that every write to obj was a server-side apply
// of the agent's field manager, besides those of the named others.
func onlyAppliedBy(t *testing.T, what string, obj metav1.Object, others ...string) {
	t.Helper()
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == "driftwatch" && mf.Operation != metav1.ManagedFieldsOperationApply {
			t.Errorf("%s: the agent wrote with operation %s", what, mf.Operation)
		}
		if mf.Manager != "driftwatch" && !contains(others, mf.Manager) {
			t.Errorf("%s: unexpected field manager %s (%s)", what, mf.Manager, mf.Operation)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A chart in the Bundle becomes a real release: installed, shown by helm,
// upgraded on a change of values and of a watched ConfigMap; drift on its
// objects is corrected by one apply, without a new revision; deleting the
// Bundle uninstalls it.
func TestHelmReleaseLifecycleAndDrift(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir(), "--cluster-label", "env=staging")
	if _, err := cp.Client().CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web-values"}, Data: map[string]string{"values.yaml": "color: blue\n"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spec := manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"),
		Helm: &manifests.HelmSpec{Chart: "web", Values: map[string]any{"greeting": "hi"},
			ValuesFrom: []manifests.ValuesReference{{ConfigMapKeyRef: &manifests.KeySelector{Name: "web-values"}}}}}
	createBundle(t, ns, "web", specYAML(t, spec))
	waitBundle(t, ns, "web", "Ready", ready)
	revs := waitRevisions(t, ns, "web", 1)
	waitEvent(t, ns, "web", "Released", "release "+ns+"/web revision 1", "web-0.1.0")
	if !strings.Contains(revs[0].Chart, "web-0.1.0") {
		t.Errorf("history %v", revs)
	}
	var list []struct{ Name, Namespace, Status string }
	if err := json.Unmarshal([]byte(helmCLI(t, "list", "-n", ns, "-o", "json")), &list); err != nil || len(list) != 1 || list[0].Name != "web" || list[0].Status != "deployed" {
		t.Fatalf("helm list: %v %v", list, err)
	}
	cm := waitConfigMap(t, ns, "web-config", "greeting", "hi")
	if cm.Data["color"] != "blue" || cm.Data["env"] != "staging" {
		t.Errorf("values from the ConfigMap or the cluster's labels missing: %v", cm.Data)
	}
	set := ownership.NewSet(types.NamespacedName{Namespace: ns, Name: "web"}, ns)
	if cm.Labels[ownership.PartOfLabel] != set.ID || cm.Labels["app.kubernetes.io/managed-by"] != "Helm" {
		t.Errorf("labels %v: not stamped by the post-renderer, or not Helm's", cm.Labels)
	}
	onlyAppliedBy(t, "web-config", cm)
	onlyAppliedBy(t, "deployment web", deployment(t, ns, "web"), "kube-controller-manager")
	if !strings.Contains(helmCLI(t, "get", "values", "web", "-n", ns), "greeting: hi") {
		t.Error("helm get values does not show the Bundle's values")
	}

	// Drift: scaled, patched, deleted; each corrected, no new revision.
	kubectl(t, "-n", ns, "scale", "deployment/web", "--replicas=4")
	waitFor(t, "the deployment scaled back", func() (bool, string) {
		d := deployment(t, ns, "web")
		return *d.Spec.Replicas == 1, fmt.Sprint(*d.Spec.Replicas)
	})
	kubectl(t, "-n", ns, "patch", "configmap/web-config", "--type=merge", "-p", `{"data":{"greeting":"hacked"}}`)
	waitConfigMap(t, ns, "web-config", "greeting", "hi")
	kubectl(t, "-n", ns, "delete", "configmap/web-config")
	waitConfigMap(t, ns, "web-config", "greeting", "hi")
	waitBundle(t, ns, "web", "3 corrections", func(b *manifests.Bundle) bool { return b.Status.DriftCorrections >= 3 })
	if revs := helmHistory(t, ns, "web"); len(revs) != 1 {
		t.Fatalf("drift corrections made revisions: %v", revs)
	}

	// A change that is no input of the release makes no revision.
	spec.Drift.Ignore = []manifests.IgnoreRule{{Kind: "Deployment", FieldPaths: []string{".spec.replicas"}}}
	updateBundleSpec(t, ns, "web", specYAML(t, spec))
	waitBundle(t, ns, "web", "Ready at the new generation", ready)

	// Values changed in the Bundle, then in the watched ConfigMap.
	spec.Helm.Values["greeting"] = "bonjour"
	updateBundleSpec(t, ns, "web", specYAML(t, spec))
	waitConfigMap(t, ns, "web-config", "greeting", "bonjour")
	waitRevisions(t, ns, "web", 2)
	kubectl(t, "-n", ns, "patch", "configmap/web-values", "--type=merge", "-p", `{"data":{"values.yaml":"color: red\n"}}`)
	waitConfigMap(t, ns, "web-config", "color", "red")
	revs = waitRevisions(t, ns, "web", 3)
	for _, r := range revs[:2] {
		if r.Status != "superseded" {
			t.Errorf("history %v", revs)
		}
	}
	waitBundle(t, ns, "web", "Ready", ready)

	// Deleting the Bundle uninstalls the release.
	if err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the release uninstalled and its objects gone", func() (bool, string) {
		out := helmCLI(t, "list", "-n", ns, "-q")
		_, cmErr := cp.Client().CoreV1().ConfigMaps(ns).Get(t.Context(), "web-config", metav1.GetOptions{})
		return strings.TrimSpace(out) == "" && apierrors.IsNotFound(cmErr), out
	})
}

// A minimal Helm Bundle (chart only) works; a Bundle changed while another
// manager holds one of its fields still converges (drift.force, the
// default), and the chart's crds/ and hooks behave as Helm defines: CRDs
// installed before the templates and left to Helm, hooks run and not
// pruned as strays.
func TestHelmMinimalForceCRDsAndHooks(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	createBundle(t, ns, "mini", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"),
		Helm: &manifests.HelmSpec{Chart: "web"}, Drift: manifests.DriftSpec{Mode: manifests.DriftDetect}}))
	waitBundle(t, ns, "mini", "Ready", ready)
	waitConfigMap(t, ns, "mini-config", "greeting", "hello")
	applyAs(t, ns, "intruder", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"mini-config"},"data":{"greeting":"mine"}}`)
	waitBundle(t, ns, "mini", "Drifted", func(b *manifests.Bundle) bool { return isTrue(b, manifests.ConditionDrifted) })
	createBundle(t, ns, "hooked", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "hooked"),
		Helm: &manifests.HelmSpec{Chart: "hooked"}}))
	updateBundleSpec(t, ns, "mini", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"),
		Helm: &manifests.HelmSpec{Chart: "web", Values: map[string]any{"greeting": "new"}}, Drift: manifests.DriftSpec{Mode: manifests.DriftDetect}}))
	cm := waitConfigMap(t, ns, "mini-config", "greeting", "new")
	onlyAppliedBy(t, "mini-config", cm)
	waitRevisions(t, ns, "mini", 2)

	// Another Bundle naming the same release is refused, naming the owner.
	createBundle(t, ns, "thief", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"),
		Helm: &manifests.HelmSpec{Chart: "web", ReleaseName: "mini"}}))
	waitBundle(t, ns, "thief", "refused: the release is another Bundle's", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "belongs to bundle "+ns+".mini")
	})
	waitRevisions(t, ns, "mini", 2)

	waitBundle(t, ns, "hooked", "Ready", ready)
	crdLabels := kubectl(t, "get", "crd", "widgets.charts.driftwatch.io", "-o", "jsonpath={.metadata.labels}")
	t.Cleanup(func() {
		_ = exec.Command(cp.Bin("kubectl"), "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "delete", "crd", "widgets.charts.driftwatch.io").Run()
	})
	if strings.Contains(crdLabels, ownership.PartOfLabel) {
		t.Error("a crds/ CRD is Helm's (installed once, never deleted): it must not be owned by the Bundle")
	}
	widget := kubectl(t, "-n", ns, "get", "widgets.charts.driftwatch.io", "hooked-widget", "-o", "jsonpath={.metadata.labels}")
	if !strings.Contains(widget, ownership.PartOfLabel) {
		t.Errorf("the custom resource is not owned: %s", widget)
	}
	hook, ok := configMap(t, ns, "hooked-installed")
	if !ok {
		t.Fatal("the post-install hook did not run")
	}
	if _, stamped := hook.Labels[ownership.PartOfLabel]; stamped {
		t.Error("a hook is Helm's: it must not be owned by the Bundle")
	}
	b := waitBundle(t, ns, "hooked", "Ready with one object", func(b *manifests.Bundle) bool { return ready(b) && b.Status.Summary.Desired == 1 })
	if _, ok := configMap(t, ns, "hooked-installed"); !ok {
		t.Errorf("the hook's ConfigMap was pruned: %+v", b.Status)
	}
}

// A template error names the file and line; the other Bundles go on.
// A failing upgrade with atomic is rolled back, reported, and retried
// with backoff, not in a loop.
func TestHelmTemplateErrorAndAtomicRollback(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	broken := append(chartFiles(t, "web"), manifests.Resource{Name: "web/templates/broken.yaml",
		Content: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  x: {{ .Values.missing.field }}\n"})
	createBundle(t, ns, "broken", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: broken, Helm: &manifests.HelmSpec{Chart: "web"}}))
	spec := manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"), Helm: &manifests.HelmSpec{Chart: "web", Atomic: true, TimeoutSeconds: 30}}
	createBundle(t, ns, "good", specYAML(t, spec))
	waitBundle(t, ns, "broken", "Synced=False naming the template's file and line", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "web/templates/broken.yaml:6")
	})
	waitBundle(t, ns, "good", "Ready", ready)

	// An upgrade the API server refuses (an invalid name) is rolled back.
	spec.Helm.Values = map[string]any{"replicas": "many"}
	updateBundleSpec(t, ns, "good", specYAML(t, spec))
	b := waitBundle(t, ns, "good", "the failed upgrade reported", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "rolled back") &&
			!isTrue(b, manifests.ConditionReady)
	})
	revs := waitRevisions(t, ns, "good", 3)
	if revs[1].Status != "failed" || !strings.Contains(revs[2].Description, "Rollback to 1") {
		t.Errorf("history %v, want a failed revision 2 and a rollback to 1", revs)
	}
	if d := deployment(t, ns, "good"); *d.Spec.Replicas != 1 {
		t.Errorf("replicas %d after the rollback", *d.Spec.Replicas)
	}
	// Retried after a pause of at least 10 s: no fourth revision at once.
	if revs := helmHistory(t, ns, "good"); len(revs) > 3 {
		t.Errorf("retried at once: %v (status %+v)", revs, b.Status)
	}
}

// An agent killed during an install leaves the release pending-install;
// the next agent recovers it instead of failing for ever with "another
// operation is in progress".
func TestHelmPendingReleaseRecoveredAfterKill(t *testing.T) {
	ns, a := setup(t, "--chart-cache-dir", t.TempDir())
	createBundle(t, ns, "slow", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "slow"),
		Helm: &manifests.HelmSpec{Chart: "slow", TimeoutSeconds: 600}}))
	waitFor(t, "the release pending-install", func() (bool, string) {
		s, err := cp.Client().CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "owner=helm,name=slow"})
		if err != nil || len(s.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		return s.Items[0].Labels["status"] == "pending-install", s.Items[0].Labels["status"]
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	startAgent(t, ns, "--chart-cache-dir", t.TempDir())
	waitBundle(t, ns, "slow", "Ready", ready)
	revs := waitRevisions(t, ns, "slow", 2)
	if revs[0].Status != "failed" && revs[0].Status != "superseded" {
		t.Errorf("history %v", revs)
	}
	if _, ok := configMap(t, ns, "slow-config"); !ok {
		t.Error("the release's objects are missing")
	}
}
