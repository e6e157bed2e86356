package guard

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

func TestFieldsKeys(t *testing.T) {
	for _, tt := range []struct {
		path string
		want []string
	}{
		{".spec.replicas", []string{"f:spec", "f:replicas"}},
		{`.spec.template.spec.containers[name="web"].image`, []string{"f:spec", "f:template", "f:spec", "f:containers", `k:{"name":"web"}`, "f:image"}},
		{`.spec.ports[protocol="TCP",port=443]`, []string{"f:spec", "f:ports", `k:{"port":443,"protocol":"TCP"}`}},
		{".metadata.annotations.example.com/note", []string{"f:metadata", "f:annotations", "f:example.com/note"}},
		{".metadata.labels.app.kubernetes.io/name", []string{"f:metadata", "f:labels", "f:app.kubernetes.io/name"}},
		{`.spec.finalizers[="a,b"]`, []string{"f:spec", "f:finalizers", `v:"a,b"`}},
		{".spec.list[3]", []string{"f:spec", "f:list", "i:3"}},
	} {
		got, err := fieldsKeys(tt.path)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("fieldsKeys(%s) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
	for _, bad := range []string{"spec.replicas", ".spec..x", ".spec[name=\"x\"", ".spec.x[y]z"} {
		if got, err := fieldsKeys(bad); err == nil {
			t.Errorf("fieldsKeys(%s) = %q, want an error", bad, got)
		}
	}
}

func TestObjects(t *testing.T) {
	s := Spec{Bundle: types.NamespacedName{Namespace: "team-a", Name: "web"}, FieldManager: "driftwatch",
		Exempt: []string{"system:serviceaccount:driftwatch-system:driftwatch"},
		Scale:  []ScaleTarget{{Resource: schema.GroupResource{Group: "apps", Resource: "deployments"}, Namespace: "web", Name: "api", Replicas: 2}},
		Ignore: []manifests.IgnoreRule{{Kind: "ConfigMap", FieldPaths: []string{".data.mode"}}}}
	objs := Objects(s)
	if len(objs) != 3 {
		t.Fatalf("%d objects, want a policy and two bindings", len(objs))
	}
	if objs[0].GetName() != "driftwatch.team-a.web" || objs[0].GetKind() != "ValidatingAdmissionPolicy" {
		t.Errorf("policy %s %s", objs[0].GetKind(), objs[0].GetName())
	}
	actions, _, _ := unstructured.NestedSlice(objs[1].Object, "spec", "validationActions")
	if !reflect.DeepEqual(actions, []any{"Deny"}) {
		t.Errorf("Prevent binds with %v", actions)
	}
	s.Warn, s.Scale = true, nil
	objs = Objects(s)
	if len(objs) != 2 {
		t.Fatalf("%d objects without scale targets, want 2", len(objs))
	}
	if actions, _, _ = unstructured.NestedSlice(objs[1].Object, "spec", "validationActions"); !reflect.DeepEqual(actions, []any{"Warn", "Audit"}) {
		t.Errorf("Warn binds with %v", actions)
	}
	if expr := unchanged(s.Ignore); !strings.Contains(expr, `"f:data"`) || !strings.Contains(expr, `object.kind == "ConfigMap"`) {
		t.Errorf("the comparison does not leave .data.mode of ConfigMaps out: %s", expr)
	}
	if expr := unchanged(nil); expr != "variables.oldF == variables.newF" {
		t.Errorf("without ignore rules: %s", expr)
	}
}
