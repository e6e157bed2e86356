package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

func TestFightIsDetectedAndBacksOff(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)

	// A little autoscaler that sets replicas to 5 whenever it sees another value.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	writes := 0
	t.Cleanup(func() { cancel(); wg.Wait() })
	client := cp.Client()
	w, err := client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String()})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Stop()
		scale := func() {
			_, err := client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", &autoscalingv1.Scale{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 5}},
				metav1.UpdateOptions{FieldManager: "autoscaler"})
			if err == nil {
				mu.Lock()
				writes++
				mu.Unlock()
			}
		}
		scale()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if d, isDep := ev.Object.(interface{ GetName() string }); isDep && d.GetName() == "web" {
					dep, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
					if err == nil && *dep.Spec.Replicas != 5 {
						scale()
					}
				}
			}
		}
	}()

	b := waitBundle(t, ns, "web", "Stalled by a fight over .spec.replicas with autoscaler", func(b *manifests.Bundle) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionStalled && c.Status == metav1.ConditionTrue &&
				strings.Contains(c.Message, ".spec.replicas") && strings.Contains(c.Message, "autoscaler/scale") &&
				strings.Contains(c.Message, "fieldPaths") {
				return true
			}
		}
		return false
	})
	waitEvent(t, ns, "web", "FightDetected", ".spec.replicas", "autoscaler/scale", "spec.drift.ignore")
	mu.Lock()
	w1 := writes
	mu.Unlock()
	// Each take by the autoscaler is corrected at most once, and the
	// corrections stop at the threshold (3) instead of looping.
	if b.Status.DriftCorrections > 4 {
		t.Errorf("%d corrections before the fight was declared; want at most 4", b.Status.DriftCorrections)
	}
	if w1 > int(b.Status.DriftCorrections)+2 {
		t.Errorf("the autoscaler wrote %d times against %d corrections: a loop", w1, b.Status.DriftCorrections)
	}
}

func TestPruneRemovesObjectsThatLeftTheBundle(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	if _, ok := configMap(t, ns, "settings"); !ok {
		t.Fatal("settings not created")
	}
	parentName := ownership.NewSet(ownership.Bundle{Namespace: ns, Name: "web"}, ns).ParentName
	parent, ok := configMap(t, ns, parentName)
	if !ok || parent.Annotations[ownership.ContainsGroupKindsAnnotation] != "ConfigMap,Deployment.apps" {
		t.Fatalf("ApplySet parent %s: found %v, annotations %v", parentName, ok, parent)
	}
	spec := strings.Replace(webBundle("defaultNamespace: "+ns), "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: settings}\n    data: {mode: production}\n", "", 1)
	updateBundleSpec(t, ns, "web", spec)
	waitFor(t, "settings pruned", func() (bool, string) {
		_, ok := configMap(t, ns, "settings")
		return !ok, "still there"
	})
	b := waitBundle(t, ns, "web", "Ready with 1 object", func(b *manifests.Bundle) bool { return ready(b) && b.Status.Summary.Desired == 1 })
	if b.Status.DriftCorrections != 0 {
		t.Errorf("pruning counted as drift: %d corrections", b.Status.DriftCorrections)
	}
	waitFor(t, "the parent to list only Deployment.apps", func() (bool, string) {
		p, _ := configMap(t, ns, parentName)
		return p.Annotations[ownership.ContainsGroupKindsAnnotation] == "Deployment.apps", p.Annotations[ownership.ContainsGroupKindsAnnotation]
	})
}

const sharedConfigMap = `
resources:
- name: shared.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: shared}
    data: {owner: %s}
`

func TestObjectsOfOthersAreNeverTaken(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "first", fmt.Sprintf(sharedConfigMap, "first")+"defaultNamespace: "+ns)
	waitBundle(t, ns, "first", "Ready", ready)
	createBundle(t, ns, "second", fmt.Sprintf(sharedConfigMap, "second")+"defaultNamespace: "+ns)
	b := waitBundle(t, ns, "second", "a Conflict naming the owner", func(b *manifests.Bundle) bool {
		return len(b.Status.Resources) == 1 && b.Status.Resources[0].State == manifests.StateConflict &&
			strings.Contains(b.Status.Resources[0].Message, "owned by bundle "+ns+"/first")
	})
	if isTrue(b, manifests.ConditionSynced) || b.Status.Summary.Conflicts != 1 {
		t.Errorf("second bundle: Synced %v, conflicts %d; want false, 1", isTrue(b, manifests.ConditionSynced), b.Status.Summary.Conflicts)
	}
	waitEvent(t, ns, "second", "Conflict", "ConfigMap/"+ns+"/shared", ns+"/first")
	cm, _ := configMap(t, ns, "shared")
	if cm.Data["owner"] != "first" {
		t.Errorf("the second bundle changed the object: %v", cm.Data)
	}

	// An object nobody owns is adopted only when asked.
	if _, err := cp.Client().CoreV1().ConfigMaps(ns).Create(context.Background(), configMapObject(ns, "orphan"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	orphan := strings.ReplaceAll(fmt.Sprintf(sharedConfigMap, "third"), "name: shared", "name: orphan") + "defaultNamespace: " + ns
	createBundle(t, ns, "third", orphan)
	waitBundle(t, ns, "third", "a Conflict that suggests adopt", func(b *manifests.Bundle) bool {
		return len(b.Status.Resources) == 1 && strings.Contains(b.Status.Resources[0].Message, "spec.adopt")
	})
	updateBundleSpec(t, ns, "third", orphan+"\nadopt: true")
	waitBundle(t, ns, "third", "Ready after adopting", ready)
	cm, _ = configMap(t, ns, "orphan")
	if cm.Data["owner"] != "third" || cm.Labels[ownership.BundleLabel] != ownership.BundleLabelValue(ownership.Bundle{Namespace: ns, Name: "third"}) {
		t.Errorf("orphan not adopted: data %v labels %v", cm.Data, cm.Labels)
	}
}

func TestBadInputIsReportedAndTheRestApplied(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "healthy", webBundle("defaultNamespace: "+ns))

	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write(bytes.Repeat([]byte("a"), manifests.MaxDecodedBytes+1))
	zw.Close()
	bad := `
defaultNamespace: ` + ns + `
targetNamespace: ` + ns + `
resources:
- name: good.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: good}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: good}
    data: {again: "yes"}
- name: broken.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: broken
- name: unknown.yaml
  content: |
    apiVersion: example.com/v1
    kind: Gadget
    metadata: {name: g}
- name: cluster.yaml
  content: |
    apiVersion: v1
    kind: Namespace
    metadata: {name: not-allowed}
- name: rejected.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: Bad_Name}
- name: bomb.yaml
  encoding: base64+gzip
  content: ` + base64.StdEncoding.EncodeToString(bomb.Bytes()) + `
`
	createBundle(t, ns, "bad", bad)
	want := map[string]string{
		"broken.yaml#1":  "invalid YAML",
		"good.yaml#2":    "declared twice (also in good.yaml#1)",
		"unknown.yaml#1": "unknown kind example.com/v1, Kind=Gadget",
		"cluster.yaml#1": "cluster-scoped, but the bundle sets targetNamespace",
		"Bad_Name":       "Invalid value",
		"bomb.yaml":      "exceed",
	}
	b := waitBundle(t, ns, "bad", "every bad object reported", func(b *manifests.Bundle) bool {
		cond := ""
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && c.Status == metav1.ConditionFalse {
				cond = c.Message
			}
		}
		for where, what := range want {
			if !containsBoth(cond, where, what) {
				return false
			}
		}
		return true
	})
	if cm, ok := configMap(t, ns, "good"); !ok || cm.Data["again"] != "" {
		t.Errorf("the good object: applied %v, data %v (want applied, first declaration)", ok, cm)
	}
	if isTrue(b, manifests.ConditionReady) {
		t.Error("a bundle with bad input is Ready")
	}
	waitBundle(t, ns, "healthy", "Ready beside the bad bundle", ready)

	createBundle(t, ns, "empty", "defaultNamespace: "+ns+"\nresources: []")
	waitBundle(t, ns, "empty", "reported as empty", func(b *manifests.Bundle) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && strings.Contains(c.Message, "declares no objects") {
				return true
			}
		}
		return false
	})
}

func containsBoth(s, a, b string) bool {
	for _, part := range strings.Split(s, "; ") {
		if strings.Contains(part, a) && strings.Contains(part, b) {
			return true
		}
	}
	return false
}

func TestRestartRebaselinesWithoutWriting(t *testing.T) {
	ns, first := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	parent := ownership.NewSet(ownership.Bundle{Namespace: ns, Name: "web"}, ns).ParentName
	versions := func() map[string]string {
		out := map[string]string{}
		for _, name := range []string{"settings", parent} {
			cm, ok := configMap(t, ns, name)
			if ok {
				out[name] = cm.ResourceVersion
			}
		}
		d, err := cp.Client().AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err == nil {
			out["web"] = d.ResourceVersion
		}
		return out
	}
	// The Deployment's status moves with its pods; wait until it is still.
	waitFor(t, "the deployment to be available", func() (bool, string) {
		d, err := cp.Client().AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2 && d.Status.ObservedGeneration == d.Generation, fmt.Sprint(err)
	})
	before := versions()
	first.stop(t)

	second := startAgent(t, ns)
	waitFor(t, "the new agent to sync the bundle", func() (bool, string) {
		m := second.scrape(t)
		return strings.Contains(m, `driftwatch_bundle_last_sync_timestamp_seconds{bundle="web"`), "no sync yet"
	})
	after := versions()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s was written by the restarted agent: resourceVersion %s → %s", name, rv, after[name])
		}
	}
	if m := second.scrape(t); strings.Contains(m, `driftwatch_apply_duration_seconds_count{result="success"}`) {
		t.Errorf("the restarted agent applied objects:\n%s", grep(m, "driftwatch_apply_duration_seconds_count"))
	}
	// And it still repairs drift.
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=4")
	waitEvent(t, ns, "web", "DriftCorrected", ".spec.replicas", "kubectl/scale")
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestDeletingABundle(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "gone", strings.ReplaceAll(fmt.Sprintf(sharedConfigMap, "gone"), "name: shared", "name: gone-cm")+"defaultNamespace: "+ns)
	createBundle(t, ns, "kept", strings.ReplaceAll(fmt.Sprintf(sharedConfigMap, "kept"), "name: shared", "name: kept-cm")+"defaultNamespace: "+ns+"\nkeepResourcesOnDelete: true")
	waitBundle(t, ns, "gone", "Ready", ready)
	waitBundle(t, ns, "kept", "Ready", ready)
	for _, name := range []string{"gone", "kept"} {
		if err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bundle "+name+" to be gone", func() (bool, string) {
			_, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
	waitFor(t, "gone-cm deleted with its bundle", func() (bool, string) {
		_, ok := configMap(t, ns, "gone-cm")
		return !ok, "still there"
	})
	if _, ok := configMap(t, ns, "kept-cm"); !ok {
		t.Error("kept-cm was deleted although keepResourcesOnDelete is set")
	}
}

func TestCRDAndItsCustomResourcesInOneBundle(t *testing.T) {
	ns, _ := setup(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	spec := `
defaultNamespace: ` + ns + `
resources:
- name: widget.yaml
  content: |
    apiVersion: ` + group + `/v1
    kind: Widget
    metadata: {name: w1}
    spec: {size: 3}
- name: crd.yaml
  content: |
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.` + group + `}
    spec:
      group: ` + group + `
      names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec: {type: object, properties: {size: {type: integer}}}
`
	createBundle(t, ns, "widgets", spec)
	waitBundle(t, ns, "widgets", "Ready", ready)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
	t.Cleanup(func() {
		_ = dyn.Resource(crdGVR).Delete(context.Background(), "widgets."+group, metav1.DeleteOptions{}) // cluster-scoped: not removed with the namespace
	})
	kubectl(t, "patch", "-n", ns, "widgets."+group+"/w1", "--type=merge", "-p", `{"spec":{"size":9}}`)
	waitFor(t, "the custom resource reverted", func() (bool, string) {
		w, err := dyn.Resource(gvr).Namespace(ns).Get(context.Background(), "w1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		size := w.Object["spec"].(map[string]any)["size"]
		return fmt.Sprint(size) == "3", fmt.Sprint(size)
	})
	waitEvent(t, ns, "widgets", "DriftCorrected", ".spec.size", "kubectl-patch")
}

func TestObjectsThatLeftTheBundleWhileTheAgentWasDownArePruned(t *testing.T) {
	ns, first := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	first.stop(t)

	// Without the ConfigMap: no kind of the new spec is a ConfigMap, so only
	// the ApplySet parent tells the next agent where to look.
	spec := strings.Replace(webBundle("defaultNamespace: "+ns), "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: settings}\n    data: {mode: production}\n", "", 1)
	updateBundleSpec(t, ns, "web", spec)
	startAgent(t, ns)
	waitFor(t, "settings pruned by the restarted agent", func() (bool, string) {
		_, ok := configMap(t, ns, "settings")
		return !ok, "still there"
	})
	waitBundle(t, ns, "web", "Ready with 1 object", func(b *manifests.Bundle) bool { return ready(b) && b.Status.Summary.Desired == 1 })
}

func TestDriftWhileTheAgentWasDownIsRepairedOnStart(t *testing.T) {
	ns, first := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	first.stop(t)

	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	kubectl(t, "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"mode":"debug"}}`)
	startAgent(t, ns)
	ctx := context.Background()
	waitFor(t, "replicas and data restored by the new agent", func() (bool, string) {
		d, err := cp.Client().AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cm, _ := configMap(t, ns, "settings")
		return *d.Spec.Replicas == 2 && cm.Data["mode"] == "production", fmt.Sprintf("replicas %d, mode %s", *d.Spec.Replicas, cm.Data["mode"])
	})
	waitEvent(t, ns, "web", "DriftCorrected", ".spec.replicas", "kubectl/scale")
	waitEvent(t, ns, "web", "DriftCorrected", ".data.mode", "kubectl-patch")
}

func TestChangedListKeyInACustomResourceIsRepaired(t *testing.T) {
	ns, _ := setup(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	spec := `
defaultNamespace: ` + ns + `
resources:
- name: crd.yaml
  content: |
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: gateways.` + group + `}
    spec:
      group: ` + group + `
      names: {kind: Gateway, plural: gateways, singular: gateway, listKind: GatewayList}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  listeners:
                    type: array
                    x-kubernetes-list-type: map
                    x-kubernetes-list-map-keys: [port]
                    items:
                      type: object
                      required: [port]
                      properties:
                        port: {type: integer}
                        name: {type: string}
    ---
    apiVersion: ` + group + `/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      listeners:
      - {port: 443, name: https}
`
	createBundle(t, ns, "gw", spec)
	waitBundle(t, ns, "gw", "Ready", ready)
	t.Cleanup(func() {
		_ = dyn.Resource(crdGVR).Delete(context.Background(), "gateways."+group, metav1.DeleteOptions{}) // cluster-scoped
	})
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gateways"}
	_, err := dyn.Resource(gvr).Namespace(ns).Patch(context.Background(), "gw", types.JSONPatchType,
		[]byte(`[{"op":"replace","path":"/spec/listeners/0/port","value":444}]`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "exactly the listener on 443 again", func() (bool, string) {
		gw, err := dyn.Resource(gvr).Namespace(ns).Get(context.Background(), "gw", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ls, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
		return len(ls) == 1 && fmt.Sprint(ls[0].(map[string]any)["port"]) == "443", fmt.Sprint(ls)
	})
	waitEvent(t, ns, "gw", "DriftCorrected", ".spec.listeners[port=443]")
}

// Syncs of several Bundles run at once. One that ends must not stop the
// informer that another, still applying, has just started for a kind no
// recorded state uses yet: that Bundle would stay NotReady ("not in the
// cache") and its drift would go unseen.
func TestConcurrentSyncsKeepEachOthersWatches(t *testing.T) {
	ns, _ := setup(t)
	var big strings.Builder
	big.WriteString("defaultNamespace: " + ns + "\nresources:\n- name: app.yaml\n  content: |\n")
	big.WriteString(`    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: nginx:1}]}
`)
	for i := range 100 {
		fmt.Fprintf(&big, "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: big-%d}\n", i)
	}
	createBundle(t, ns, "big", big.String())
	for i := range 3 {
		createBundle(t, ns, fmt.Sprintf("small-%d", i), fmt.Sprintf(
			"defaultNamespace: %s\nresources:\n- name: cm.yaml\n  content: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: small-%d}\n", ns, i))
	}
	for i := range 3 {
		waitBundle(t, ns, fmt.Sprintf("small-%d", i), "Ready", ready)
	}
	waitBundle(t, ns, "big", "Ready", ready)
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=3")
	waitEvent(t, ns, "big", "DriftCorrected", ".spec.replicas", "kubectl/scale")
}
