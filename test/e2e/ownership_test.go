package e2e

import (
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

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
	if _, err := cp.Client().CoreV1().ConfigMaps(ns).Create(t.Context(), configMapObject(ns, "orphan"), metav1.CreateOptions{}); err != nil {
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

func TestDeletingABundle(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "gone", strings.ReplaceAll(fmt.Sprintf(sharedConfigMap, "gone"), "name: shared", "name: gone-cm")+"defaultNamespace: "+ns)
	createBundle(t, ns, "kept", strings.ReplaceAll(fmt.Sprintf(sharedConfigMap, "kept"), "name: shared", "name: kept-cm")+"defaultNamespace: "+ns+"\nkeepResourcesOnDelete: true")
	waitBundle(t, ns, "gone", "Ready", ready)
	waitBundle(t, ns, "kept", "Ready", ready)
	for _, name := range []string{"gone", "kept"} {
		if err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bundle "+name+" to be gone", func() (bool, string) {
			_, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
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
