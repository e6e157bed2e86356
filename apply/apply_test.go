package apply

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

func TestDeleteDirectives(t *testing.T) {
	port := fieldpath.MakePathOrDie("spec", "ports",
		fieldpath.KeyByFields("port", int64(444), "protocol", "TCP"))
	nested := fieldpath.MakePathOrDie("spec", "template", "spec", "containers",
		fieldpath.KeyByFields("name", "web"), "ports", fieldpath.KeyByFields("containerPort", int64(81), "protocol", "TCP"))
	tests := []struct {
		name  string
		paths []fieldpath.Path
		want  string
	}{
		{"service port", []fieldpath.Path{port},
			`{"spec":{"ports":[{"$patch":"delete","port":444,"protocol":"TCP"}]}}`},
		{"a port inside a container", []fieldpath.Path{nested},
			`{"spec":{"template":{"spec":{"containers":[{"name":"web","ports":[{"$patch":"delete","containerPort":81,"protocol":"TCP"}]}]}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch := map[string]any{}
			for _, p := range tt.paths {
				if err := addDeleteDirective(patch, p); err != nil {
					t.Fatal(err)
				}
			}
			got, _ := json.Marshal(patch)
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if err := addDeleteDirective(map[string]any{}, fieldpath.MakePathOrDie("spec", "replicas")); err == nil {
		t.Error("a path that is not a list item was accepted")
	}
	_ = value.NewValueInterface // keep the value package: KeyByFields builds values from it
}
