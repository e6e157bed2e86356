package detect

import (
	"reflect"
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

func entry(manager, subresource string, op metav1.ManagedFieldsOperationType, fieldsJSON string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Subresource: subresource, Operation: op,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fieldsJSON)}
}

func set(t *testing.T, fieldsJSON string) *fieldpath.Set {
	t.Helper()
	s := &fieldpath.Set{}
	if err := s.FromJSON(metav1.NewFieldsV1(fieldsJSON).GetRawReader()); err != nil {
		t.Fatal(err)
	}
	return s
}

const applied = `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`

func TestDetect(t *testing.T) {
	apply := metav1.ManagedFieldsOperationApply
	update := metav1.ManagedFieldsOperationUpdate
	tests := []struct {
		name         string
		now          []metav1.ManagedFieldsEntry
		ignore       []string
		wantFields   []string
		wantManagers []string
	}{
		{
			name: "nothing changed",
			now:  []metav1.ManagedFieldsEntry{entry("driftwatch", "", apply, applied)},
		},
		{
			name: "kubectl scale took replicas",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", apply, `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`),
				entry("kubectl", "scale", update, `{"f:spec":{"f:replicas":{}}}`),
			},
			wantFields:   []string{".spec.replicas"},
			wantManagers: []string{"kubectl/scale"},
		},
		{
			name: "an ignored field is not drift",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", apply, `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`),
				entry("hpa", "scale", update, `{"f:spec":{"f:replicas":{}}}`),
			},
			ignore: []string{".spec.replicas"},
		},
		{
			name: "a removed label has no new owner",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", apply, `{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`),
			},
			wantFields:   []string{".metadata.labels.tier"},
			wantManagers: []string{"removed"},
		},
		{
			name: "a replaced container is reported once, at the item",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", apply, `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:replicas":{}}}`),
				entry("kubectl-edit", "", update, `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"api\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`),
			},
			wantFields:   []string{`.spec.template.spec.containers[name="web"]`},
			wantManagers: []string{"removed"},
		},
		{
			name: "another manager sharing our field is not drift",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", apply, applied),
				entry("bystander", "", apply, `{"f:spec":{"f:replicas":{}}}`),
			},
		},
		{
			name: "our Update entry does not count as owning",
			now: []metav1.ManagedFieldsEntry{
				entry("driftwatch", "", update, applied),
			},
			wantFields:   []string{".metadata.labels.app", ".metadata.labels.tier", ".spec.replicas", `.spec.template.spec.containers[name="web"]`},
			wantManagers: []string{"driftwatch"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Detect(set(t, applied), tt.now, "driftwatch", tt.ignore)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.Fields, tt.wantFields) {
				t.Errorf("fields = %q, want %q", f.Fields, tt.wantFields)
			}
			if f.Drifted() && !reflect.DeepEqual(f.Culprits(), tt.wantManagers) {
				t.Errorf("culprits = %q, want %q", f.Culprits(), tt.wantManagers)
			}
			if f.Drifted() && (f.Cause == CauseRemoved) != (len(f.Managers) == 0) {
				t.Errorf("cause %s with managers %q", f.Cause, f.Managers)
			}
			if f.Drifted() != (len(tt.wantFields) > 0) {
				t.Errorf("Drifted() = %v", f.Drifted())
			}
		})
	}
}

func TestNewer(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"10", "9", true}, {"9", "10", false}, {"10", "10", false}, {"x", "y", true}, {"x", "x", false},
	} {
		if got := Newer(tt.a, tt.b); got != tt.want {
			t.Errorf("Newer(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDeclaredLeaves(t *testing.T) {
	obj := map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "n",
			"labels": map[string]any{"app": "web"}, "annotations": map[string]any{"a": "b"}},
		"spec": map[string]any{"replicas": int64(2), "paused": nil,
			"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "web"}}}}},
		"data":   map[string]any{},
		"status": map[string]any{"replicas": int64(1)},
	}
	var got []string
	for _, p := range declaredLeaves(obj) {
		got = append(got, p.String())
	}
	sort.Strings(got)
	want := []string{".metadata.annotations.a", ".metadata.labels.app", ".spec.replicas"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("declaredLeaves = %q, want %q", got, want)
	}
}

func TestOwnedOrAtomic(t *testing.T) {
	owned := set(t, `{"f:spec":{"f:selector":{},"f:replicas":{}}}`)
	for _, tt := range []struct {
		path fieldpath.Path
		want bool
	}{
		{fieldpath.MakePathOrDie("spec", "replicas"), true},
		{fieldpath.MakePathOrDie("spec", "selector", "matchLabels", "app"), true},
		{fieldpath.MakePathOrDie("spec", "paused"), false},
	} {
		if got := ownedOrAtomic(owned, tt.path); got != tt.want {
			t.Errorf("ownedOrAtomic(%s) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
