package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

var (
	crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// webBundle declares a Deployment "web" (2 replicas, image nginx:1, label
// tier=frontend) and a ConfigMap "settings", plus extra spec lines.
func webBundle(extra string) string {
	return `
resources:
- name: app.yaml
  content: |
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web, tier: frontend}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - name: web
            image: nginx:1
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {mode: production}
` + extra
}

func TestDriftIsRevertedAndReported(t *testing.T) {
	ns, agent := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	client := cp.Client()
	ctx := t.Context()

	replicas := func() string {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(*d.Spec.Replicas)
	}
	image := func() string {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	tier := func() string {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return d.Labels["tier"]
	}
	mode := func() string {
		cm, ok := configMap(t, ns, "settings")
		if !ok {
			return "<missing>"
		}
		return cm.Data["mode"]
	}

	steps := []struct {
		name    string
		edit    func(t *testing.T)
		current func() string
		want    string
		field   string
		manager string
	}{
		{"kubectl scale", func(t *testing.T) { kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5") },
			replicas, "2", ".spec.replicas", "kubectl/scale"},
		{"kubectl patch of the image", func(t *testing.T) {
			kubectl(t, "patch", "-n", ns, "deployment/web", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}`)
		}, image, "nginx:1", `.spec.template.spec.containers[name="web"].image`, "kubectl-patch"},
		{"an edit (manager kubectl-edit)", func(t *testing.T) {
			_, err := client.CoreV1().ConfigMaps(ns).Patch(ctx, "settings", types.MergePatchType,
				[]byte(`{"data":{"mode":"debug"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
			if err != nil {
				t.Fatal(err)
			}
		}, mode, "production", ".data.mode", "kubectl-edit"},
		{"label removal", func(t *testing.T) { kubectl(t, "label", "-n", ns, "deployment/web", "tier-") },
			tier, "frontend", ".metadata.labels.tier", "removed"},
		{"a forced apply by another manager", func(t *testing.T) {
			kubectl(t, "apply", "--server-side", "--force-conflicts", "--field-manager=intruder", "-f", "-", "-n", ns)
		}, mode, "production", ".data.mode", "intruder"},
		{"kubectl delete", func(t *testing.T) { kubectl(t, "delete", "-n", ns, "configmap/settings") },
			mode, "production", "ConfigMap/" + ns + "/settings", "deleted"},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := getBundle(t, ns, "web").Status.DriftCorrections
			if s.name == "a forced apply by another manager" {
				applyAs(t, ns, "intruder", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"mode":"debug"}}`)
			} else {
				s.edit(t)
			}
			waitFor(t, s.name+" reverted", func() (bool, string) {
				got := s.current()
				return got == s.want, got
			})
			waitEvent(t, ns, "web", "DriftDetected", s.field, s.manager)
			waitEvent(t, ns, "web", "DriftCorrected", s.field, s.manager)
			b := waitBundle(t, ns, "web", "the correction counted and Ready again", func(b *manifests.Bundle) bool {
				return b.Status.DriftCorrections > before && ready(b) && b.Status.LastDriftTime != nil
			})
			if b.Status.DriftCorrections != int64(i+1) {
				t.Errorf("driftCorrections = %d after %d edits: corrections were repeated or lost", b.Status.DriftCorrections, i+1)
			}
		})
	}

	m := agent.scrape(t)
	// The informers select every object with a driftwatch label, also those
	// of earlier tests whose namespaces are still being deleted: at least 1.
	if !strings.Contains(m, `driftwatch_watched_objects{group="apps",resource="deployments",version="v1"} `) ||
		strings.Contains(m, `driftwatch_watched_objects{group="apps",resource="deployments",version="v1"} 0`) {
		t.Errorf("driftwatch_watched_objects for deployments missing or 0:\n%s", grep(m, "driftwatch_watched_objects"))
	}
	for _, want := range []string{
		`driftwatch_drift_detected_total{bundle="web",group="apps",kind="Deployment",manager="kubectl/scale",namespace="` + ns + `"} 1`,
		`driftwatch_drift_detected_total{bundle="web",group="",kind="ConfigMap",manager="deleted",namespace="` + ns + `"} 1`,
		`driftwatch_drift_corrections_total{bundle="web",group="",kind="ConfigMap",namespace="` + ns + `",result="success"} 3`,
		`driftwatch_drift_corrections_total{bundle="web",group="apps",kind="Deployment",namespace="` + ns + `",result="success"} 3`,
		`driftwatch_drift_correction_seconds_count 6`,
		`driftwatch_bundle_ready{bundle="web",namespace="` + ns + `"} 1`,
		`driftwatch_bundle_resources{bundle="web",namespace="` + ns + `",state="ready"} 2`,
		`driftwatch_source_connected 1`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s; driftwatch_ lines:\n%s", want, grep(m, "driftwatch_"))
		}
	}
}

// applyAs server-side applies a JSON object with force as manager.
// applyAs server-side applies a ConfigMap (JSON) as manager, forcing.
func applyAs(t *testing.T, ns, manager, obj string) {
	t.Helper()
	var cm corev1.ConfigMap
	if err := json.Unmarshal([]byte(obj), &cm); err != nil {
		t.Fatal(err)
	}
	_, err := cp.Client().CoreV1().ConfigMaps(ns).Patch(t.Context(), cm.Name, types.ApplyPatchType,
		[]byte(obj), metav1.PatchOptions{FieldManager: manager, Force: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestDetectModeReportsWithoutWriting(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+"\ndrift: {mode: Detect}"))
	waitBundle(t, ns, "web", "Ready", ready)
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	b := waitBundle(t, ns, "web", "Drifted naming the field and manager", func(b *manifests.Bundle) bool {
		if !isTrue(b, manifests.ConditionDrifted) || len(b.Status.Resources) != 1 {
			return false
		}
		r := b.Status.Resources[0]
		return r.Kind == "Deployment" && r.Name == "web" && r.State == manifests.StateDrifted &&
			slices.Equal(r.Fields, []string{".spec.replicas"}) && r.ChangedBy == "kubectl/scale"
	})
	if b.Status.DriftCorrections != 0 || b.Status.Summary.Drifted != 1 || isTrue(b, manifests.ConditionReady) {
		t.Errorf("Detect mode: corrections %d, drifted %d, ready %v; want 0, 1, false",
			b.Status.DriftCorrections, b.Status.Summary.Drifted, isTrue(b, manifests.ConditionReady))
	}
	d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 5 {
		t.Errorf("Detect mode changed replicas back to %d", *d.Spec.Replicas)
	}

	// A re-sync (new generation, same objects) must neither write nor
	// forget the drift it reports. The ConfigMap has no status that would
	// bring another event and re-detect a forgotten drift.
	kubectl(t, "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"mode":"debug"}}`)
	waitBundle(t, ns, "web", "two drifted objects", func(b *manifests.Bundle) bool { return b.Status.Summary.Drifted == 2 })
	updateBundleSpec(t, ns, "web", webBundle("defaultNamespace: "+ns+"\ndrift: {mode: Detect}\npaused: false"))
	b = waitBundle(t, ns, "web", "the new generation observed", func(b *manifests.Bundle) bool {
		return b.Status.ObservedGeneration == b.Generation && b.Generation > 1
	})
	if !isTrue(b, manifests.ConditionDrifted) || b.Status.Summary.Drifted != 2 {
		t.Errorf("after a re-sync in Detect mode: Drifted %v, drifted %d; want true, 2", isTrue(b, manifests.ConditionDrifted), b.Status.Summary.Drifted)
	}
	if cm, _ := configMap(t, ns, "settings"); cm.Data["mode"] != "debug" {
		t.Errorf("the re-sync in Detect mode wrote the ConfigMap: %v", cm.Data)
	}
}

func TestIgnoreRuleIsRespected(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+`
drift:
  ignore:
  - {group: apps, kind: Deployment, name: web, fieldPaths: [".spec.replicas"]}`))
	waitBundle(t, ns, "web", "Ready", ready)
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	// A later, not ignored, edit of the same object is corrected: so once
	// the image is back, the scale event has certainly been processed.
	kubectl(t, "patch", "-n", ns, "deployment/web", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}`)
	waitEvent(t, ns, "web", "DriftCorrected", "image")
	b := waitBundle(t, ns, "web", "Ready", ready)
	d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 5 {
		t.Errorf("the ignored field .spec.replicas was reverted to %d", *d.Spec.Replicas)
	}
	for _, m := range events(t, ns, "web", "DriftDetected") {
		if strings.Contains(m, ".spec.replicas") {
			t.Errorf("ignored field reported as drift: %s", m)
		}
	}
	if b.Status.DriftCorrections != 1 {
		t.Errorf("driftCorrections = %d, want 1 (the image only)", b.Status.DriftCorrections)
	}
}

func TestChangedServicePortIsRepaired(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "svc", `
defaultNamespace: `+ns+`
resources:
- name: svc.yaml
  content: |
    apiVersion: v1
    kind: Service
    metadata: {name: api}
    spec:
      selector: {app: api}
      ports:
      - {name: https, port: 443, targetPort: 8443}
`)
	waitBundle(t, ns, "svc", "Ready", ready)
	ctx := t.Context()
	client := cp.Client()
	// What kubectl edit sends when a user changes the port number.
	_, err := client.CoreV1().Services(ns).Patch(ctx, "api", types.JSONPatchType,
		[]byte(`[{"op":"replace","path":"/spec/ports/0/port","value":444}]`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Service to have exactly port 443 again", func() (bool, string) {
		svc, err := client.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var ports []string
		for _, p := range svc.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", p.Name, p.Port))
		}
		return len(ports) == 1 && ports[0] == "https:443", strings.Join(ports, ",")
	})
	waitEvent(t, ns, "svc", "DriftCorrected", `.spec.ports[port=443,protocol="TCP"]`)
	waitBundle(t, ns, "svc", "Ready again with one correction", func(b *manifests.Bundle) bool {
		return ready(b) && b.Status.DriftCorrections == 1
	})
}

func TestIgnoreRuleIntoAListItem(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+`
drift:
  ignore:
  - {kind: Deployment, fieldPaths: ['.spec.template.spec.containers[name="web"].image']}`))
	waitBundle(t, ns, "web", "Ready", ready)
	ctx := t.Context()
	client := cp.Client()
	// An image updater owns the image from now on.
	_, err := client.AppsV1().Deployments(ns).Patch(ctx, "web", types.StrategicMergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.1"}]}}}}`),
		metav1.PatchOptions{FieldManager: "image-updater"})
	if err != nil {
		t.Fatal(err)
	}
	// A drift that is not ignored is corrected — by an apply that must
	// leave the image to the updater.
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	waitEvent(t, ns, "web", "DriftCorrected", ".spec.replicas")
	d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "nginx:1.1" || *d.Spec.Replicas != 2 {
		t.Errorf("after the correction: image %s, replicas %d; want nginx:1.1 (ignored) and 2", img, *d.Spec.Replicas)
	}
	for _, m := range events(t, ns, "web", "DriftDetected") {
		if strings.Contains(m, "image") {
			t.Errorf("the ignored image was reported as drift: %s", m)
		}
	}
}

func TestPausedBundlesApplyNothingAndReportDrift(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+"\npaused: true"))
	waitBundle(t, ns, "web", "Synced=False, reason Paused", func(b *manifests.Bundle) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && c.Status == metav1.ConditionFalse && c.Reason == "Paused" {
				return true
			}
		}
		return false
	})
	if _, ok := configMap(t, ns, "settings"); ok {
		t.Fatal("a paused bundle applied its objects")
	}
	if b := getBundle(t, ns, "web"); isTrue(b, manifests.ConditionReady) {
		t.Error("a paused bundle that never applied anything is Ready")
	}
	updateBundleSpec(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready once unpaused", ready)

	updateBundleSpec(t, ns, "web", webBundle("defaultNamespace: "+ns+"\npaused: true"))
	waitBundle(t, ns, "web", "paused again", func(b *manifests.Bundle) bool { return b.Status.ObservedGeneration == b.Generation })
	kubectl(t, "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"mode":"debug"}}`)
	b := waitBundle(t, ns, "web", "the drift reported", func(b *manifests.Bundle) bool {
		return isTrue(b, manifests.ConditionDrifted) && b.Status.Summary.Drifted == 1
	})
	if cm, _ := configMap(t, ns, "settings"); cm.Data["mode"] != "debug" || b.Status.DriftCorrections != 0 {
		t.Errorf("a paused bundle corrected drift: data %v, corrections %d", cm.Data, b.Status.DriftCorrections)
	}
}
