package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// syncedWith waits until the Bundle's Synced condition, at its current
// generation, contains every one of parts: the agent has synced what the
// test just wrote.
func syncedWith(t *testing.T, ns, name string, parts ...string) *manifests.Bundle {
	t.Helper()
	return waitBundle(t, ns, name, fmt.Sprintf("Synced saying %q", parts), func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		if c == nil || c.ObservedGeneration != b.Generation || b.Status.ObservedGeneration != b.Generation {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(c.Message, p) {
				return false
			}
		}
		return true
	})
}

// TestBadRenderDeletesNothing: a render with errors prunes nothing — a
// typo in one document of a three-ConfigMap Bundle, a Kustomize tree whose
// output passes the size limit — and says so; once the render is whole
// again, what left the Bundle is pruned.
func TestBadRenderDeletesNothing(t *testing.T) {
	ns, _ := setup(t)
	three := func(b string) string {
		return "defaultNamespace: " + ns + "\n" + resourcesOf(configMapDoc("a", ""), b, configMapDoc("c", ""))
	}
	createBundle(t, ns, "three", three(configMapDoc("b", "")))
	waitBundle(t, ns, "three", "Ready", ready)
	updateBundleSpec(t, ns, "three", three("    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: b\n    data: {k: v}\n"))
	syncedWith(t, ns, "three", "objects.yaml#2", "nothing pruned")
	for _, name := range []string{"a", "b", "c"} {
		if _, ok := configMap(t, ns, name); !ok {
			t.Errorf("ConfigMap %s deleted by a render with a typo", name)
		}
	}
	updateBundleSpec(t, ns, "three", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("a", ""), configMapDoc("c", "")))
	waitFor(t, "b pruned once the render is whole", func() (bool, string) {
		_, ok := configMap(t, ns, "b")
		return !ok, "b still there"
	})

	// A diamond of bases doubles its output per level: ten levels of one
	// 10 KiB ConfigMap render 1,024 of them, 10 MiB, past the 8 MiB limit
	// (refused from the tree, before it is built; past a limit found only
	// in the output, the decode error holds the prune the same way).
	files := []manifests.Resource{
		{Name: "l0/kustomization.yaml", Content: "resources: [cm.yaml]\n"},
		{Name: "l0/cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {k: " + strings.Repeat("x", 10<<10) + "}\n"},
	}
	for i := 1; i <= 10; i++ {
		for _, side := range []string{"a", "b"} {
			files = append(files, manifests.Resource{Name: fmt.Sprintf("l%d/%s/kustomization.yaml", i, side),
				Content: fmt.Sprintf("resources: [../../l%d]\nnameSuffix: -%s\n", i-1, side)})
		}
		files = append(files, manifests.Resource{Name: fmt.Sprintf("l%d/kustomization.yaml", i), Content: "resources: [a, b]\n"})
	}
	kust := func(dir string) string {
		return specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: files, Kustomize: &manifests.KustomizeSpec{Dir: dir}})
	}
	createBundle(t, ns, "diamond", kust("l0"))
	waitBundle(t, ns, "diamond", "Ready", ready)
	updateBundleSpec(t, ns, "diamond", kust("l10"))
	syncedWith(t, ns, "diamond", "more than the agent's limits", "nothing was built")
	if _, ok := configMap(t, ns, "base"); !ok {
		t.Error("the ConfigMap of the last whole render was deleted by a render past the size limit")
	}
}

// denyDeletes makes the API server refuse every deletion of a ConfigMap in
// ns (a ValidatingAdmissionPolicy: what a failing webhook does) until the
// returned function is called; it returns once a deletion is refused.
func denyDeletes(t *testing.T, ns string) (allow func()) {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: %[1]s-nodelete}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules: [{apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [configmaps]}]
  validations: [{expression: "false", message: "deletion blocked by the test"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: %[1]s-nodelete}
spec:
  policyName: %[1]s-nodelete
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: %[1]s}}
`, ns))
	allow = func() {
		ctx := context.WithoutCancel(t.Context())
		_ = cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, ns+"-nodelete", metav1.DeleteOptions{})
		_ = cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, ns+"-nodelete", metav1.DeleteOptions{})
	}
	t.Cleanup(allow)
	cms := cp.Client().CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deletions refused by the policy", func() (bool, string) {
		err := cms.Delete(t.Context(), "probe", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), "deletion blocked"), fmt.Sprint(err)
	})
	return allow
}

// parentOf reads the ApplySet parent of Bundle ns/name (the agent's
// namespace is ns in these tests).
func parentOf(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	parent, err := dyn.Resource(ownership.ParentGVR).Namespace(ns).Get(t.Context(),
		ownership.NewSet(types.NamespacedName{Namespace: ns, Name: name}, ns).ParentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ApplySet parent of %s/%s: %v", ns, name, err)
	}
	return parent
}

// TestFailedDeletionStaysPending: an object whose deletion fails stays in
// the inventory (the ApplySet parent) — across a restart of the agent — and
// is deleted once the API server lets it, on a retry.
func TestFailedDeletionStaysPending(t *testing.T) {
	ns, a := setup(t)
	createBundle(t, ns, "pending", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("keep", ""), configMapDoc("doomed", "")))
	waitBundle(t, ns, "pending", "Ready", ready)
	allow := denyDeletes(t, ns)
	updateBundleSpec(t, ns, "pending", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("keep", "")))
	syncedWith(t, ns, "pending", "doomed", "deletion blocked by the test")
	inventoryHas := func(name string) bool {
		inv, err := ownership.InventoryOf(parentOf(t, ns, "pending"))
		if err != nil {
			t.Fatal(err)
		}
		return inv.Has(manifests.ObjectRef{Kind: "ConfigMap", Namespace: ns, Name: name})
	}
	if !inventoryHas("doomed") || parentOf(t, ns, "pending").GetAnnotations()[ownership.ContainsGroupKindsAnnotation] != "ConfigMap" {
		t.Fatal("the object whose deletion failed left the inventory, or its kind the parent")
	}

	a.stop(t)
	startAgent(t, ns)
	syncedWith(t, ns, "pending", "doomed", "deletion blocked by the test")
	allow()
	waitFor(t, "the pending deletion retried once allowed", func() (bool, string) {
		_, ok := configMap(t, ns, "doomed")
		return !ok, "doomed still there"
	})
	waitBundle(t, ns, "pending", "Ready", ready)
	if inventoryHas("doomed") || !inventoryHas("keep") {
		t.Error("the inventory after the deletion: want keep only")
	}
}

// TestBundleDeletedWithoutStateIsCleanedUp: a Bundle deleted while no agent
// held its state (a restart, a change of leader) is cleaned up from its
// inventory: its objects and its ApplySet parent are deleted before its
// finalizer is removed.
func TestBundleDeletedWithoutStateIsCleanedUp(t *testing.T) {
	ns, a := setup(t)
	createBundle(t, ns, "gone", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("first", ""), configMapDoc("second", "")))
	waitBundle(t, ns, "gone", "Ready", ready)
	a.stop(t)
	if err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	startAgent(t, ns)
	waitFor(t, "the Bundle, its objects and its parent gone", func() (bool, string) {
		_, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), "gone", metav1.GetOptions{})
		_, x := configMap(t, ns, "first")
		_, y := configMap(t, ns, "second")
		_, parent := configMap(t, ns, ownership.NewSet(types.NamespacedName{Namespace: ns, Name: "gone"}, ns).ParentName)
		return apierrors.IsNotFound(err) && !x && !y && !parent, fmt.Sprintf("bundle: %v; x %v, y %v, parent %v", err, x, y, parent)
	})
}

// TestCrashedPodDeletedClearsTheCrash: a crashed Pod of an owned
// Deployment that is deleted at once — as a kubelet's failed or evicted Pod
// is, with no update first — no longer holds its Bundle NotReady.
func TestCrashedPodDeletedClearsTheCrash(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	pods := cp.Client().CoreV1().Pods(ns)
	list, err := pods.List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("pods of web: %v, %v", list, err)
	}
	victim := list.Items[0].Name
	if _, err := pods.Patch(t.Context(), victim, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"pod-container-running-failed.stage.kwok.x-k8s.io":"true"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle(t, ns, "web", "NotReady with the crash", func(b *manifests.Bundle) bool {
		for _, r := range b.Status.Resources {
			if r.Kind == "Deployment" && strings.Contains(r.Message, victim) && strings.Contains(r.Message, "containerFailed") {
				return !ready(b)
			}
		}
		return false
	})
	// kwok holds its Pods with a finalizer, so that their deletion is an
	// update first; without it, a deletion with no grace period is one
	// event: the Pod is gone.
	if _, err := pods.Patch(t.Context(), victim, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(t.Context(), victim, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitBundle(t, ns, "web", "Ready once the crashed Pod is gone", ready)
}
