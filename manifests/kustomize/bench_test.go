package kustomize

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/driftwatch/driftwatch/manifests"
)

// thousand is a Bundle of n ConfigMaps: as a kustomization base with a
// prod overlay that patches one of them and adds a label to all, and as
// the same ConfigMaps in raw manifests.
func thousand(n int) (kust, raw manifests.BundleSpec) {
	var docs strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&docs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%04d}\ndata: {key: value-%d}\n", i, i)
	}
	kust = manifests.BundleSpec{Kustomize: &manifests.KustomizeSpec{Dir: "overlays/prod"}, Resources: []manifests.Resource{
		{Name: "base/kustomization.yaml", Content: "resources: [configmaps.yaml]\n"},
		{Name: "base/configmaps.yaml", Content: docs.String()},
		{Name: "overlays/prod/kustomization.yaml", Content: "resources: [../../base]\nlabels: [{pairs: {env: prod}}]\npatches: [{path: patch.yaml}]\n"},
		{Name: "overlays/prod/patch.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-0000}\ndata: {key: prod}\n"},
	}}
	raw = manifests.BundleSpec{Resources: []manifests.Resource{{Name: "configmaps.yaml", Content: docs.String()}}}
	return kust, raw
}

// go test ./manifests/kustomize -run '^$' -bench Render -benchtime 20x
func BenchmarkRender(b *testing.B) {
	kust, raw := thousand(1000)
	p := manifests.Pipeline{Kustomize: Renderer{}, Overlays: Patch}
	for _, c := range []struct {
		name string
		spec manifests.BundleSpec
	}{{"kustomize-1000-with-overlay", kust}, {"raw-1000", raw}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				r, err := p.Render(context.Background(), &manifests.Bundle{Spec: c.spec}, manifests.Cluster{})
				if err != nil || len(r.Errors) > 0 || len(r.Objects) != 1000 {
					b.Fatalf("%v %v %d", err, r.Errors, len(r.Objects))
				}
			}
		})
	}
}
