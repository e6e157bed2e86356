package ownership

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/driftwatch/driftwatch/manifests"
)

func TestInventoryRoundTripsThroughTheParent(t *testing.T) {
	s := NewSet(Bundle{Namespace: "team-a", Name: "web"}, "driftwatch-system")
	refs := []manifests.ObjectRef{
		{Kind: "ConfigMap", Namespace: "web", Name: "settings"},
		{Group: "apps", Kind: "Deployment", Namespace: "web", Name: "api"},
		{Kind: "Namespace", Name: "web"},
		{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "a/b"}, // a slash in a name stays in the name
	}
	parent, err := s.ParentOf(NewInventory(refs...))
	if err != nil {
		t.Fatal(err)
	}
	if got := parent.GetAnnotations()[ContainsGroupKindsAnnotation]; got != "ClusterRole.rbac.authorization.k8s.io,ConfigMap,Deployment.apps,Namespace" {
		t.Errorf("kinds %q", got)
	}
	if got := parent.GetAnnotations()[AdditionalNamespacesAnnotation]; got != "web" {
		t.Errorf("namespaces %q", got)
	}
	inv, err := InventoryOf(parent)
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Recorded || inv.Len() != len(refs) {
		t.Fatalf("read back %v (recorded %v)", inv.Objects(), inv.Recorded)
	}
	for _, r := range refs {
		if !inv.Has(r) {
			t.Errorf("%v lost", r)
		}
	}
	if !inv.Equal(NewInventory(refs...)) || inv.Equal(NewInventory(refs[:2]...)) {
		t.Error("Equal")
	}
}

func TestInventoryOfAnOldParentIsNotRecorded(t *testing.T) {
	s := NewSet(Bundle{Namespace: "a", Name: "b"}, "driftwatch-system")
	inv, err := InventoryOf(s.Parent(nil, nil))
	if err != nil || inv.Recorded || inv.Len() != 0 {
		t.Fatalf("a parent without %s: %+v, %v; want an empty, unrecorded inventory", InventoryKey, inv, err)
	}
}

func TestInventoryOfAHostileParent(t *testing.T) {
	for name, data := range map[string]string{
		"not base64": "%%%",
		"not gzip":   "aGVsbG8=",
	} {
		p := &unstructured.Unstructured{Object: map[string]any{"binaryData": map[string]any{InventoryKey: data}}}
		if _, err := InventoryOf(p); err == nil || !strings.Contains(err.Error(), InventoryKey) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
