package scaling

import (
	"reflect"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

func TestAutoscalersFollowTheirTargets(t *testing.T) {
	a := NewAutoscalers()
	web := manifests.ObjectRef{Group: "apps", Kind: "Deployment", Namespace: "shop", Name: "web"}
	api := manifests.ObjectRef{Group: "apps", Kind: "Deployment", Namespace: "shop", Name: "api"}
	hpa := types.NamespacedName{Namespace: "shop", Name: "web-hpa"}
	if changed := a.Set(hpa, &web); !reflect.DeepEqual(changed, []manifests.ObjectRef{web}) || a.Of(web) != "web-hpa" {
		t.Fatalf("a new autoscaler: changed %v, Of(web) %q", changed, a.Of(web))
	}
	if changed := a.Set(hpa, &web); len(changed) != 0 {
		t.Errorf("the same target again changed %v", changed)
	}
	if changed := a.Set(hpa, &api); !reflect.DeepEqual(changed, []manifests.ObjectRef{web, api}) || a.Of(web) != "" || a.Of(api) != "web-hpa" {
		t.Errorf("retargeted: changed %v, Of(web) %q, Of(api) %q", changed, a.Of(web), a.Of(api))
	}
	if got := a.Describe(slices.Values([]manifests.ObjectRef{web, api})); !reflect.DeepEqual(got, []string{"Deployment/shop/api (HorizontalPodAutoscaler web-hpa)"}) {
		t.Errorf("Describe = %q", got)
	}
	if rules := a.IgnoreRules(slices.Values([]manifests.ObjectRef{web, api})); len(rules) != 1 || rules[0].Name != "api" || rules[0].FieldPaths[0] != ReplicasField {
		t.Errorf("IgnoreRules = %+v", rules)
	}
	if changed := a.Set(hpa, nil); !reflect.DeepEqual(changed, []manifests.ObjectRef{api}) || a.Of(api) != "" {
		t.Errorf("deleted: changed %v, Of(api) %q", changed, a.Of(api))
	}
}

func TestReplicas(t *testing.T) {
	dep := schema.GroupKind{Group: "apps", Kind: "Deployment"}
	if n, ok := Replicas(dep, []byte(`{"spec":{"replicas":3}}`)); !ok || n != 3 {
		t.Errorf("Replicas = %d, %v", n, ok)
	}
	if _, ok := Replicas(dep, []byte(`{"spec":{}}`)); ok {
		t.Error("a Deployment without replicas declares some")
	}
	if _, ok := Replicas(schema.GroupKind{Kind: "ConfigMap"}, []byte(`{"spec":{"replicas":3}}`)); ok {
		t.Error("a ConfigMap has /scale")
	}
}
