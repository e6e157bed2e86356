package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

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
		d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
		if err == nil {
			out["web"] = d.ResourceVersion
		}
		return out
	}
	// The Deployment's status moves with its pods; wait until it is still.
	waitFor(t, "the deployment to be available", func() (bool, string) {
		d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
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
	ctx := t.Context()
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

// TestKilledInItsFirstSyncTheAgentStillFindsEveryKind: an agent killed in
// the middle of a Bundle's first sync has already listed, in the ApplySet
// parent, every kind it was about to apply (KEP-3659: the parent first).
// The Bundle then drops a kind; the restarted agent still watches that
// kind and prunes what the killed one applied of it. The sync is held in
// the middle by a CRD whose kind conflicts with another's, so that it
// never becomes Established.
func TestKilledInItsFirstSyncTheAgentStillFindsEveryKind(t *testing.T) {
	ns, first := setup(t)
	group := ns + ".example.com"
	extra := ns + "-extra"
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		for _, crd := range []string{"widgets." + group, "gadgets." + group} {
			_ = dyn.Resource(crdGVR).Delete(ctx, crd, metav1.DeleteOptions{}) // cluster-scoped
		}
		_ = cp.Client().CoreV1().Namespaces().Delete(ctx, extra, metav1.DeleteOptions{})
	})
	crd := func(plural string) string {
		return fmt.Sprintf(`    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: %s.%s}
    spec:
      group: %s
      names: {kind: Widget, plural: %s}
      scope: Namespaced
      versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
`, plural, group, group, plural)
	}
	createBundle(t, ns, "stuck", fmt.Sprintf(`
resources:
- name: first-stage.yaml
  content: |
    apiVersion: v1
    kind: Namespace
    metadata: {name: %s}
    ---
%s    ---
%s`, extra, crd("widgets"), crd("gadgets")))
	waitFor(t, "the Namespace applied by the first sync", func() (bool, string) {
		n, err := cp.Client().CoreV1().Namespaces().Get(t.Context(), extra, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n.Labels[ownership.BundleLabel] != "", fmt.Sprint(n.Labels)
	})
	if b := getBundle(t, ns, "stuck"); isTrue(b, manifests.ConditionSynced) {
		t.Fatal("the first sync finished: the conflicting CRD did not hold it")
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done

	updateBundleSpec(t, ns, "stuck", `
defaultNamespace: `+ns+`
resources:
- name: cm.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: left}
    data: {k: v}
`)
	startAgent(t, ns)
	waitFor(t, "the Namespace of the killed sync pruned by the restarted agent", func() (bool, string) {
		n, err := cp.Client().CoreV1().Namespaces().Get(t.Context(), extra, metav1.GetOptions{})
		if err != nil {
			return true, err.Error()
		}
		return n.DeletionTimestamp != nil, "still there, not terminating"
	})
	waitBundle(t, ns, "stuck", "Ready with the ConfigMap", ready)
}
