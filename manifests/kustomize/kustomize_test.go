package kustomize

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// exampleSpec is examples/kustomize.yaml's spec: a base and two overlays.
func exampleSpec(t *testing.T) manifests.BundleSpec {
	t.Helper()
	data, err := os.ReadFile("../../examples/kustomize.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b manifests.Bundle
	if err := yaml.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	return b.Spec
}

func renderFor(t *testing.T, spec manifests.BundleSpec, labels map[string]string) (*manifests.Rendered, error) {
	t.Helper()
	return manifests.Pipeline{Kustomize: Renderer{}, Overlays: Patch}.Render(context.Background(), &manifests.Bundle{Spec: spec},
		manifests.Cluster{Name: "c1", Labels: labels})
}

func objectsByName(t *testing.T, r *manifests.Rendered) map[string]map[string]any {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("render errors: %v", r.Errors)
	}
	out := map[string]map[string]any{}
	for _, o := range r.Objects {
		out[o.Object.GetKind()+"/"+o.Object.GetName()] = o.Object.Object
		again, err := r.Object(o.Locator)
		if err != nil {
			t.Fatalf("%s: %v", o.Source, err)
		}
		a, _ := yaml.Marshal(again.Object)
		b, _ := yaml.Marshal(o.Object.Object)
		if string(a) != string(b) {
			t.Errorf("%s: a correction would read another object:\n%s\nthan the render:\n%s", o.Source, a, b)
		}
	}
	return out
}

func TestKustomizeOverlayChosenByClusterLabels(t *testing.T) {
	spec := exampleSpec(t)
	dev, err := renderFor(t, spec, map[string]string{"env": "dev"})
	if err != nil {
		t.Fatal(err)
	}
	objs := objectsByName(t, dev)
	if len(objs) != 3 || objs["ConfigMap/settings"]["data"].(map[string]any)["mode"] != "dev" || dev.Spec.Customized.Name != "" {
		t.Fatalf("dev: %v (customization %q)", objs, dev.Spec.Customized.Name)
	}
	prod, err := renderFor(t, spec, map[string]string{"env": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	objs = objectsByName(t, prod)
	if prod.Spec.Customized.Name != "prod" || objs["ConfigMap/settings"]["data"].(map[string]any)["mode"] != "prod" || objs["ConfigMap/prod-only"] == nil {
		t.Fatalf("prod: %v", objs)
	}
	ns := objs["Namespace/shop-k"]["metadata"].(map[string]any)
	if ns["labels"].(map[string]any)["tier"] != "production" {
		t.Errorf("namespace labels not set on the declared namespace: %v", ns)
	}
	if replicas := objs["Deployment/web"]["spec"].(map[string]any)["replicas"]; replicas != int64(3) {
		t.Errorf("replicas %v (%T)", replicas, replicas)
	}
	lab, err := renderFor(t, spec, map[string]string{"env": "lab"})
	if err != nil || len(lab.Objects) != 0 || len(lab.Errors) != 0 || !lab.Spec.Customized.DoNotDeploy {
		t.Fatalf("lab: %v objects, %v, %v", len(lab.Objects), lab.Errors, err)
	}
}

func kustomizeSpec(files map[string]string) manifests.BundleSpec {
	spec := manifests.BundleSpec{Kustomize: &manifests.KustomizeSpec{Dir: "app"}}
	for name, content := range files {
		spec.Resources = append(spec.Resources, manifests.Resource{Name: name, Content: content})
	}
	return spec
}

func TestKustomizeRefusesWhatItWouldFetchAndNamesBrokenFiles(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n"
	for name, c := range map[string]struct {
		files map[string]string
		want  string
	}{
		"remote base": {map[string]string{"app/kustomization.yaml": "resources: ['github.com/example/repo//base?ref=v1']\n"},
			`app/kustomization.yaml: "github.com/example/repo//base?ref=v1" is remote`},
		"https resource": {map[string]string{"app/kustomization.yaml": "resources: [https://example.com/x.yaml]\n"},
			`"https://example.com/x.yaml" is remote`},
		"remote in a base": {map[string]string{"app/kustomization.yaml": "resources: [../base]\n", "base/kustomization.yaml": "components: [git@github.com:o/r.git]\n"},
			`base/kustomization.yaml: "git@github.com:o/r.git" is remote`},
		"absolute path": {map[string]string{"app/kustomization.yaml": "resources: [/etc/passwd]\n"}, "is an absolute path"},
		"missing file":  {map[string]string{"app/kustomization.yaml": "resources: [cm.yaml]\n"}, `"cm.yaml" is not a file or directory of the bundle`},
		"helmCharts": {map[string]string{"app/kustomization.yaml": "helmCharts: [{name: x, repo: https://charts.example.com}]\n"},
			"give the chart as spec.helm"},
		"generator file": {map[string]string{"app/kustomization.yaml": "configMapGenerator: [{name: g, files: [conf=https://example.com/c]}]\n"},
			`"https://example.com/c" is remote`},
		// Builtin plugin configurations load files too: in a file, inline,
		// and a chart generator.
		"transformer file with a remote patch": {map[string]string{"app/kustomization.yaml": "resources: [cm.yaml]\ntransformers: [t.yaml]\n", "app/cm.yaml": cm,
			"app/t.yaml": "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: https://example.com/p.yaml\ntarget: {kind: ConfigMap}\n"},
			`names "https://example.com/p.yaml", which is remote`},
		"inline transformer with a remote patch": {map[string]string{"app/kustomization.yaml": "resources: [cm.yaml]\ntransformers:\n- |\n  apiVersion: builtin\n  kind: PatchTransformer\n  metadata: {name: p}\n  path: http://169.254.169.254/latest/meta-data\n", "app/cm.yaml": cm},
			`names "http://169.254.169.254/latest/meta-data", which is remote`},
		"chart generator": {map[string]string{"app/kustomization.yaml": "generators: [g.yaml]\n",
			"app/g.yaml": "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: c}\nname: x\n"}, "HelmChartInflationGenerator"},
		// A block scalar is no inline configuration among resources.
		"remote resource in a block scalar": {map[string]string{"app/kustomization.yaml": "resources:\n- |\n  https://example.com/x.yaml\n"},
			"is remote"},
		"broken patch": {map[string]string{"app/kustomization.yaml": "resources: [cm.yaml]\npatches: [{path: fix.yaml}]\n", "app/cm.yaml": cm,
			"app/fix.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a\n"}, "fix.yaml"},
		"patch of nothing": {map[string]string{"app/kustomization.yaml": "resources: [cm.yaml]\npatches: [{path: fix.yaml}]\n", "app/cm.yaml": cm,
			"app/fix.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {k: w}\n"}, "patch app/fix.yaml: "},
		"no kustomization": {map[string]string{"app/cm.yaml": cm}, "app/ has no kustomization.yaml"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := renderFor(t, kustomizeSpec(c.files), nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestTargetCustomizationsAreValidated(t *testing.T) {
	base := manifests.BundleSpec{Resources: []manifests.Resource{{Name: "a.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}}}
	for name, c := range map[string]struct {
		tcs  string
		want string
	}{
		"duplicate":     {"[{name: x}, {name: x}]", `the name "x" is used twice`},
		"bad selector":  {"[{name: x, clusterSelector: {matchExpressions: [{key: env, operator: Sometimes}]}}]", "clusterSelector"},
		"no name":       {"[{clusterName: c1}]", "a name is required"},
		"overlay miss":  {"[{name: x, yaml: {overlays: [o.yaml]}}]", "matches no object (Deployment web)"},
		"no overlay":    {"[{name: x, yaml: {overlays: [gone.yaml]}}]", "yaml overlay gone.yaml: no such resource"},
		"kustomize off": {"[{name: x, kustomize: {dir: y}}]", "kustomize needs spec.kustomize"},
	} {
		t.Run(name, func(t *testing.T) {
			spec := base
			spec.Resources = append(spec.Resources, manifests.Resource{Name: "o.yaml", Content: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"})
			if err := yaml.Unmarshal([]byte(c.tcs), &spec.TargetCustomizations); err != nil {
				t.Fatal(err)
			}
			_, err := renderFor(t, spec, map[string]string{"env": "prod"})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestOverlaysPatchStrategicallyAndByJSONPatch(t *testing.T) {
	spec := manifests.BundleSpec{DefaultNamespace: "apps", Resources: []manifests.Resource{
		{Name: "app.yaml", Content: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: web:1}
      - {name: sidecar, image: proxy:1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: base, keep: "yes"}
`},
		{Name: "prod/patches.yaml", Content: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - {name: web, image: web:2}
---
kind: JSONPatch
target: {kind: ConfigMap, name: settings}
patch:
- {op: replace, path: /data/mode, value: prod}
`}}}
	spec.TargetCustomizations = []manifests.TargetCustomization{{Name: "prod", ClusterName: "c1", YAML: &manifests.YAMLSpec{Overlays: []string{"prod/patches.yaml"}},
		NamespaceLabels: map[string]string{"tier": "prod"}}}
	r, err := renderFor(t, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	objs := objectsByName(t, r)
	containers := objs["Deployment/web"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)
	if len(containers) != 2 || containers[0].(map[string]any)["image"] != "web:2" || containers[1].(map[string]any)["image"] != "proxy:1" {
		t.Errorf("strategic merge by container name: %v", containers)
	}
	if d := objs["ConfigMap/settings"]["data"].(map[string]any); d["mode"] != "prod" || d["keep"] != "yes" {
		t.Errorf("JSON patch: %v", d)
	}
	ns := objs["Namespace/apps"]
	if ns == nil {
		t.Fatalf("no Namespace object for the namespace labels: %v", objs)
	}
	md := ns["metadata"].(map[string]any)
	if md["labels"].(map[string]any)["tier"] != "prod" || md["annotations"].(map[string]any)[manifests.KeepAnnotation] != "true" {
		t.Errorf("namespace %v", md)
	}
}

// diamond is a tree of levels kustomizations, each referring twice to the
// one below (with a name suffix each), over one ConfigMap of data bytes:
// it renders 2^levels ConfigMaps.
func diamond(levels, data int) []manifests.Resource {
	files := []manifests.Resource{
		{Name: "l0/kustomization.yaml", Content: "resources: [cm.yaml]\n"},
		{Name: "l0/cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {k: " + strings.Repeat("x", data) + "}\n"},
	}
	for i := 1; i <= levels; i++ {
		for _, side := range []string{"a", "b"} {
			files = append(files, manifests.Resource{Name: fmt.Sprintf("l%d/%s/kustomization.yaml", i, side),
				Content: fmt.Sprintf("resources: [../../l%d]\nnameSuffix: -%s\n", i-1, side)})
		}
		files = append(files, manifests.Resource{Name: fmt.Sprintf("l%d/kustomization.yaml", i), Content: "resources: [a, b]\n"})
	}
	return files
}

// TestKustomizeBudgetsAreEnforcedBeforeTheBuild: a diamond of bases
// doubles its output per level — 20 levels of one small ConfigMap are a
// million objects, 10 levels of a 10 KiB one are 10 MiB — and is refused
// from the tree alone, before krusty builds it in memory; one within the
// limits renders.
func TestKustomizeBudgetsAreEnforcedBeforeTheBuild(t *testing.T) {
	for _, tc := range []struct {
		name         string
		levels, data int
		want         string
	}{
		{"a million objects", 20, 10, "at least 1048576 documents"},
		{"ten MiB", 10, 10 << 10, "more than the agent's limits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := manifests.BundleSpec{Resources: diamond(tc.levels, tc.data), Kustomize: &manifests.KustomizeSpec{Dir: fmt.Sprintf("l%d", tc.levels)}}
			_, err := renderFor(t, spec, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was built") {
				t.Fatalf("err = %v, want a refusal saying %q", err, tc.want)
			}
		})
	}
	spec := manifests.BundleSpec{Resources: diamond(4, 10), Kustomize: &manifests.KustomizeSpec{Dir: "l4"}}
	r, err := renderFor(t, spec, nil)
	if err != nil || len(r.Objects) != 16 {
		t.Fatalf("a diamond of 4 levels: %v objects, %v; want 16", len(r.Objects), err)
	}
}

// TestJSONPatchCopiesAreBounded: "copy" operations that double a value
// again and again would need memory beyond any Bundle's; they are refused
// once they add more than manifests.HardMaxBytes.
func TestJSONPatchCopiesAreBounded(t *testing.T) {
	var ops strings.Builder
	ops.WriteString("- {op: add, path: /data/k0, value: " + strings.Repeat("x", 1<<20) + "}\n")
	for i := 1; i <= 40; i++ { // 2^40 MiB if unbounded
		fmt.Fprintf(&ops, "- {op: copy, from: /data, path: /data/k%d}\n", i) // the whole map again: it doubles
	}
	o, err := overlayOf(map[string]any{"apiVersion": "driftwatch.io/v1alpha1", "kind": JSONPatchKind,
		"target": map[string]any{"kind": "ConfigMap", "name": "settings"}, "patch": mustYAML(t, ops.String())}, "bomb.yaml#1")
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "settings"}, "data": map[string]any{}}}
	if err := o.apply(obj); err == nil || !strings.Contains(err.Error(), "copy") {
		t.Fatalf("err = %v, want the copy bound", err)
	}
}

func mustYAML(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}
