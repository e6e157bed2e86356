package apply

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

func TestListPatches(t *testing.T) {
	svc := map[string]any{"spec": map[string]any{"ports": []any{
		map[string]any{"name": "https", "port": int64(443), "protocol": "TCP"}}}}
	deploy := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{
		map[string]any{"name": "web", "ports": []any{map[string]any{"containerPort": int64(80), "protocol": "TCP"}}}}}}}}
	tests := []struct {
		name string
		obj  map[string]any
		item fieldpath.Path
		want string
	}{
		{"service port", svc,
			fieldpath.MakePathOrDie("spec", "ports", fieldpath.KeyByFields("port", int64(444), "protocol", "TCP")),
			`{"spec":{"ports":[{"$patch":"delete","port":444,"protocol":"TCP"},{"name":"https","port":443,"protocol":"TCP"}]}}`},
		{"a port inside a container", deploy,
			fieldpath.MakePathOrDie("spec", "template", "spec", "containers", fieldpath.KeyByFields("name", "web"),
				"ports", fieldpath.KeyByFields("containerPort", int64(81), "protocol", "TCP")),
			`{"spec":{"template":{"spec":{"containers":[{"name":"web","ports":[{"$patch":"delete","containerPort":81,"protocol":"TCP"},{"containerPort":80,"protocol":"TCP"}]}]}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del := map[string]any{"$patch": "delete"}
			for _, f := range *tt.item[len(tt.item)-1].Key {
				del[f.Name] = f.Value.Unstructured()
			}
			list := tt.item[:len(tt.item)-1]
			patch := map[string]any{}
			if err := addToList(patch, list, append([]any{del}, listAt(tt.obj, list)...)); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(patch)
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
