package manifests

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func bundleOf(resources ...Resource) *Bundle {
	b := &Bundle{Spec: BundleSpec{DefaultNamespace: "web", Resources: resources}}
	b.Namespace, b.Name, b.Generation = "ns", "b", 3
	return b
}

func TestRenderRawManifests(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {k: v}\n"
	b := bundleOf(
		Resource{Name: "a.yaml", Content: strings.ReplaceAll(cm, "%s", "a") + "---\n" + strings.ReplaceAll(cm, "%s", "b")},
		Resource{Name: "broken.yaml", Content: "kind: ["},
		Resource{Name: "c.yaml", Encoding: EncodingBase64Gzip, Content: gz(strings.ReplaceAll(cm, "%s", "c"))},
	)
	r, err := Pipeline{}.Render(t.Context(), b, Cluster{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != 3 || r.Spec.DefaultNamespace != "web" {
		t.Errorf("generation %d, spec %+v: not the bundle's", r.Generation, r.Spec)
	}
	if r.Declared != 4 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error(), "broken.yaml#1") {
		t.Fatalf("declared %d, errors %v: want 3 objects and the broken document named", r.Declared, r.Errors)
	}
	objs := r.Take()
	if len(objs) != 3 || r.Objects != nil {
		t.Fatalf("Take gave %d objects and left %d", len(objs), len(r.Objects))
	}
	// A correction reads each object again, without the others.
	for _, o := range objs {
		again, err := r.Object(o.Locator)
		if err != nil {
			t.Fatalf("%s: %v", o.Source, err)
		}
		if !equality.Semantic.DeepEqual(again.Object, o.Object.Object) {
			t.Errorf("%s read again as %v, rendered as %v", o.Source, again.Object, o.Object.Object)
		}
	}
}

func TestHelmCustomizationMergesValuesAndOverridesTheVersion(t *testing.T) {
	spec := BundleSpec{Helm: &HelmSpec{Chart: "web", Repo: "https://charts.example", Version: "^1",
		Values: map[string]any{"image": map[string]any{"repo": "web", "tag": "1"}, "replicas": 1}},
		TargetCustomizations: []TargetCustomization{
			{Name: "eu", ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"region": "eu"}},
				Helm: &HelmSpec{Version: "^2", Values: map[string]any{"image": map[string]any{"tag": "2"}}}},
			{Name: "rest"}}}
	eu, err := Effective(spec, Cluster{Labels: map[string]string{"region": "eu"}})
	if err != nil {
		t.Fatal(err)
	}
	if eu.Customized.Name != "eu" || eu.Helm.Version != "^2" || eu.Helm.Chart != "web" || eu.Helm.Repo != "https://charts.example" {
		t.Errorf("eu: %+v", eu.Helm)
	}
	img := eu.Helm.Values["image"].(map[string]any)
	if img["repo"] != "web" || img["tag"] != "2" || eu.Helm.Values["replicas"] != float64(1) {
		t.Errorf("values not deep-merged: %v", eu.Helm.Values)
	}
	if spec.Helm.Values["image"].(map[string]any)["tag"] != "1" {
		t.Error("the Bundle's own values were changed")
	}
	us, err := Effective(spec, Cluster{Labels: map[string]string{"region": "us"}})
	if err != nil || us.Customized.Name != "rest" || us.Helm.Version != "^1" {
		t.Errorf("us: %v %+v %q", err, us.Helm, us.Customized.Name)
	}
}

// uninstaller records Uninstall calls; it renders one ConfigMap.
type uninstaller struct{ uninstalled int }

func (u *uninstaller) Render(context.Context, Input) (Output, error) {
	return RawManifests{}.Render(context.Background(), Input{Spec: &BundleSpec{Resources: []Resource{{Name: "a.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}}}})
}
func (u *uninstaller) Uninstall(context.Context, Input) error { u.uninstalled++; return nil }

func TestDoNotDeployRendersNothingAndUninstalls(t *testing.T) {
	u := &uninstaller{}
	b := &Bundle{Spec: BundleSpec{Helm: &HelmSpec{Chart: "c"}, TargetCustomizations: []TargetCustomization{{Name: "off", ClusterName: "lab", DoNotDeploy: true}}}}
	r, err := Pipeline{Helm: u}.Render(context.Background(), b, Cluster{Name: "lab"})
	if err != nil || len(r.Objects) != 0 || len(r.Errors) != 0 || u.uninstalled != 1 || r.Spec.Customized.Name != "off" {
		t.Fatalf("lab: %v, %d objects, %v, uninstalled %d", err, len(r.Objects), r.Errors, u.uninstalled)
	}
	r, err = Pipeline{Helm: u}.Render(context.Background(), b, Cluster{Name: "prod"})
	if err != nil || len(r.Objects) != 1 || u.uninstalled != 1 {
		t.Fatalf("prod: %v, %d objects, uninstalled %d", err, len(r.Objects), u.uninstalled)
	}
}

func TestLimitsRefuseTheBundleAndSaySo(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\n"
	three := fmt.Sprintf(cm+"---\n"+cm+"---\n"+cm, "a", "b", "c")
	var big bytes.Buffer
	zw := gzip.NewWriter(&big)
	_, _ = zw.Write(bytes.Repeat([]byte("#"), 1<<20)) // a MiB of comment, a KiB gzipped
	zw.Close()
	for name, tc := range map[string]struct {
		limits    Limits
		resources []Resource
		want      string // "" renders
	}{
		"within":            {Limits{Bytes: 1 << 10, Objects: 3}, []Resource{{Name: "cms.yaml", Content: three}}, ""},
		"too many objects":  {Limits{Objects: 2}, []Resource{{Name: "cms.yaml", Content: three}}, "renders 3 documents, more than 2; the agent's limit is --max-bundle-objects"},
		"too many bytes":    {Limits{Bytes: 64}, []Resource{{Name: "cms.yaml", Content: three}}, "exceed 64 bytes decoded (at cms.yaml); the agent's limit is --max-bundle-bytes"},
		"a small gzip bomb": {Limits{Bytes: 64 << 10}, []Resource{{Name: "ok.yaml", Content: three}, {Name: "bomb.yaml", Encoding: EncodingBase64Gzip, Content: base64.StdEncoding.EncodeToString(big.Bytes())}}, "(at bomb.yaml)"},
	} {
		t.Run(name, func(t *testing.T) {
			b := &Bundle{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}, Spec: BundleSpec{Resources: tc.resources}}
			r, err := Pipeline{Limits: tc.limits}.Render(context.Background(), b, Cluster{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want == "" && len(r.Objects) != 3:
				t.Fatalf("%d objects, want 3", len(r.Objects))
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
