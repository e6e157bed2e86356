package detect

import (
	"reflect"
	"testing"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

func TestRemovePath(t *testing.T) {
	obj := func() map[string]any {
		return map[string]any{"spec": map[string]any{"replicas": int64(2), "template": map[string]any{"spec": map[string]any{
			"containers": []any{
				map[string]any{"name": "web", "image": "nginx:1"},
				map[string]any{"name": "side", "image": "envoy:1"},
			}}}}}
	}
	containers := func(k string, rest ...any) fieldpath.Path {
		return fieldpath.MakePathOrDie(append([]any{"spec", "template", "spec", "containers", fieldpath.KeyByFields("name", k)}, rest...)...)
	}
	tests := []struct {
		path fieldpath.Path
		want any // the containers list afterwards, or nil
		ok   bool
	}{
		{containers("web", "image"), []any{
			map[string]any{"name": "web"}, map[string]any{"name": "side", "image": "envoy:1"}}, true},
		{containers("side"), []any{map[string]any{"name": "web", "image": "nginx:1"}}, true},
		{containers("none", "image"), nil, false},
	}
	for _, tt := range tests {
		o := obj()
		if got := RemovePath(o, tt.path); got != tt.ok {
			t.Errorf("%s: removed = %v, want %v", tt.path, got, tt.ok)
		}
		if tt.want != nil {
			got := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"]
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: containers = %v, want %v", tt.path, got, tt.want)
			}
		}
	}
	o := obj()
	if !RemovePath(o, fieldpath.MakePathOrDie("spec", "replicas")) || o["spec"].(map[string]any)["replicas"] != nil {
		t.Errorf(".spec.replicas not removed: %v", o)
	}
}
