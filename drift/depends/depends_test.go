package depends

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/driftwatch/driftwatch/manifests"
)

func bundleU(name string, labels map[string]string, deps ...map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": name, "namespace": "ns"}, "spec": map[string]any{}}}
	u.SetLabels(labels)
	var list []any
	for _, d := range deps {
		list = append(list, d)
	}
	if list != nil {
		u.Object["spec"].(map[string]any)["dependsOn"] = list
	}
	return u
}

func TestDependenciesByNameAndSelector(t *testing.T) {
	bundles := map[string]*unstructured.Unstructured{
		"db":    bundleU("db", map[string]string{"tier": "data"}),
		"cache": bundleU("cache", map[string]string{"tier": "data"}),
		"web":   bundleU("web", map[string]string{"tier": "web"}),
	}
	got, err := dependencies([]manifests.Dependency{{Name: "queue"}, {Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "data"}}}}, bundles)
	if err != nil || !reflect.DeepEqual(got, []string{"cache", "db", "queue"}) {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := dependencies([]manifests.Dependency{{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}}}, bundles); err == nil {
		t.Error("a selector that does not parse was accepted")
	}
}

func TestFindCycle(t *testing.T) {
	bundles := map[string]*unstructured.Unstructured{
		"a": bundleU("a", nil, map[string]any{"name": "b"}),
		"b": bundleU("b", nil, map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"loop": "yes"}}}),
		"c": bundleU("c", map[string]string{"loop": "yes"}, map[string]any{"name": "a"}),
		"d": bundleU("d", nil, map[string]any{"name": "a"}),
	}
	if got := findCycle("a", bundles); !reflect.DeepEqual(got, []string{"a", "b", "c", "a"}) {
		t.Errorf("cycle through a: %v", got)
	}
	if got := findCycle("d", bundles); got != nil {
		t.Errorf("d depends on a cycle but is in none: %v", got)
	}
}
