package helmrun

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// chartResources returns the files of testdata/<dir> as Bundle resources
// under the chart path "chart/".
func chartResources(t *testing.T, dir string) []manifests.Resource {
	t.Helper()
	var out []manifests.Resource
	root := filepath.Join("testdata", dir)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, manifests.Resource{Name: "chart/" + filepath.ToSlash(rel), Content: string(data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func templater(t *testing.T) *Releases {
	t.Helper()
	r, err := New(Options{Template: true, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTemplateFromResourcesWithValuesAndClusterLabels(t *testing.T) {
	spec := &manifests.BundleSpec{Resources: append(chartResources(t, "web"),
		manifests.Resource{Name: "prod.yaml", Content: "greeting: from-file\nreplicas: 3\n"}),
		DefaultNamespace: "apps",
		Helm:             &manifests.HelmSpec{Chart: "chart", ValuesFiles: []string{"prod.yaml"}, Values: map[string]any{"replicas": 5}}}
	out, err := templater(t).Render(context.Background(), manifests.Input{Bundle: types.NamespacedName{Namespace: "ns", Name: "shop"},
		Spec: spec, Cluster: manifests.Cluster{Name: "eu-1", Labels: map[string]string{"region": "eu"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Errors) > 0 || len(out.Objects) != 2 {
		t.Fatalf("got %d objects, errors %v", len(out.Objects), out.Errors)
	}
	var cm map[string]any
	for _, o := range out.Objects {
		if o.Object.GetKind() == "ConfigMap" {
			cm = o.Object.Object
			if !strings.HasPrefix(o.Source, "web/templates/config.yaml#") {
				t.Errorf("source %q, want the template's path", o.Source)
			}
			if o.Object.GetName() != "shop-config" || o.Object.GetAnnotations()[releaseNameAnnot] != "shop" ||
				o.Object.GetAnnotations()[releaseNSAnnot] != "apps" || o.Object.GetLabels()[managedByLabel] != "Helm" {
				t.Errorf("metadata %v", o.Object.Object["metadata"])
			}
		}
	}
	data, _ := cm["data"].(map[string]any)
	if data["greeting"] != "from-file" || data["cluster"] != "eu-1" || data["region"] != "eu" {
		t.Errorf("data %v: values file, cluster name and labels not merged", data)
	}
}

func TestTemplateErrorNamesFileAndLine(t *testing.T) {
	res := chartResources(t, "web")
	res = append(res, manifests.Resource{Name: "chart/templates/bad.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.nope.deeper }}\n"})
	_, err := templater(t).Render(context.Background(), manifests.Input{Bundle: types.NamespacedName{Name: "b"},
		Spec: &manifests.BundleSpec{Resources: res, Helm: &manifests.HelmSpec{Chart: "chart"}}})
	if err == nil || !strings.Contains(err.Error(), "templates/bad.yaml:6") {
		t.Fatalf("error %v, want one naming templates/bad.yaml:6", err)
	}
}

func TestBadInputsAreClearErrors(t *testing.T) {
	for name, c := range map[string]struct {
		spec manifests.BundleSpec
		want string
	}{
		"no chart":         {manifests.BundleSpec{Helm: &manifests.HelmSpec{Chart: "missing"}}, `chart "missing": no resource`},
		"values not YAML":  {manifests.BundleSpec{Resources: append(chartResources(t, "web"), manifests.Resource{Name: "v.yaml", Content: "a: [b"}), Helm: &manifests.HelmSpec{Chart: "chart", ValuesFiles: []string{"v.yaml"}}}, "values file v.yaml is not YAML"},
		"no values file":   {manifests.BundleSpec{Resources: chartResources(t, "web"), Helm: &manifests.HelmSpec{Chart: "chart", ValuesFiles: []string{"gone.yaml"}}}, "values file gone.yaml: no such resource"},
		"bad release name": {manifests.BundleSpec{Resources: chartResources(t, "web"), Helm: &manifests.HelmSpec{Chart: "chart", ReleaseName: "Not_Valid"}}, `spec.helm.releaseName "Not_Valid"`},
		"valuesFrom both": {manifests.BundleSpec{Resources: chartResources(t, "web"), Helm: &manifests.HelmSpec{Chart: "chart", ValuesFrom: []manifests.ValuesReference{{
			ConfigMapKeyRef: &manifests.KeySelector{Name: "a"}, SecretKeyRef: &manifests.KeySelector{Name: "b"}}}}}, "valuesFrom[0]: set exactly one of configMapKeyRef and secretKeyRef"},
		"unreachable repo": {manifests.BundleSpec{Helm: &manifests.HelmSpec{Chart: "web", Repo: "http://127.0.0.1:1"}}, "repository http://127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := templater(t).Render(context.Background(), manifests.Input{Bundle: types.NamespacedName{Name: "b"}, Spec: &c.spec})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// The post-renderer prepares objects as a sync does; what Helm stores
// and a correction prepares again must be the same object, hash and all.
func TestStampedObjectsPrepareToThemselves(t *testing.T) {
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	applier := apply.New(nil, nil, resettable{mapper}, apply.Options{FieldManager: "driftwatch"})
	target := apply.Target{Set: ownership.NewSet(types.NamespacedName{Namespace: "ns", Name: "shop"}, "driftwatch-system"), DefaultNamespace: "apps"}
	s := &stamper{release: "shop", namespace: "apps", prepare: func(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return applier.PrepareOne(obj, target)
	}}
	in := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n    " + postrenderFileAnnot + ": web/templates/c.yaml\ndata:\n  a: \"1\"\n" +
		"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns1\n  annotations:\n    " + postrenderFileAnnot + ": web/templates/n.yaml\n"
	out, err := s.Run(bytesBuffer(in))
	if err != nil {
		t.Fatal(err)
	}
	// Helm removes the file annotation and stores "# Source:" headers.
	stored := strings.ReplaceAll(out.String(), "    "+postrenderFileAnnot+": web/templates/c.yaml\n", "")
	stored = strings.ReplaceAll(stored, "    "+postrenderFileAnnot+": web/templates/n.yaml\n", "")
	stored = strings.Replace(stored, "---\n", "---\n# Source: web/templates/c.yaml\n", 1)
	res := splitManifest(stored)
	objs, errs := manifests.Decode(res)
	if len(errs) > 0 || len(objs) != 2 {
		t.Fatalf("objects %d, errors %v", len(objs), errs)
	}
	hashes := map[string]string{}
	for _, o := range objs {
		hashes[o.Object.GetName()] = o.Object.GetAnnotations()[apply.HashAnnotation]
		if o.Object.GetLabels()[ownership.PartOfLabel] != target.Set.ID {
			t.Errorf("%s not stamped: %v", o.Object.GetName(), o.Object.GetLabels())
		}
	}
	if objs[0].Object.GetNamespace() != "apps" || objs[1].Object.GetNamespace() != "" || objs[1].Object.GetName() != "ns1" {
		t.Errorf("namespaces %q %q", objs[0].Object.GetNamespace(), objs[1].Object.GetNamespace())
	}
	desired, invalid := applier.Prepare(objs, target)
	if len(invalid) > 0 {
		t.Fatal(invalid)
	}
	for _, d := range desired {
		if d.Hash != hashes[d.Ref.Name] || d.Hash == "" {
			t.Errorf("%s: prepared again, hash %s; stamped %s", d.Ref, d.Hash, hashes[d.Ref.Name])
		}
	}
}

type resettable struct{ meta.RESTMapper }

func (resettable) Reset() {}

func TestSplitManifestGroupsByTemplate(t *testing.T) {
	m := "---\n# Source: web/templates/a.yaml\nkind: A\n---\n# Source: web/templates/b.yaml\nkind: B\n---\n# Source: web/templates/a.yaml\nkind: A2\n"
	res := splitManifest(m)
	if len(res) != 2 || res[0].Name != "web/templates/a.yaml" || res[0].Content != "kind: A\n---\nkind: A2\n" || res[1].Content != "kind: B\n" {
		t.Fatalf("%+v", res)
	}
}

func bytesBuffer(s string) *bytes.Buffer { return bytes.NewBufferString(s) }

func TestResourcePolicyKeepIsKeptByTheAgentToo(t *testing.T) {
	s := &stamper{release: "r", namespace: "ns", prepare: func(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) { return obj, nil }}
	out, err := s.Run(bytesBuffer("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  annotations:\n    helm.sh/resource-policy: keep\n    " +
		postrenderFileAnnot + ": web/templates/pvc.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), manifests.KeepAnnotation+": \"true\"") {
		t.Errorf("a kept object is not kept by the agent:\n%s", out)
	}
	_, err = s.Run(bytesBuffer("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations:\n    " + postrenderFileAnnot + ": web/templates/cm.yaml\n"))
	if err == nil || !strings.Contains(err.Error(), "web/templates/cm.yaml") {
		t.Errorf("an invalid object's error does not name its template: %v", err)
	}
}

// TestAChartBeyondTheObjectLimitAppliesNothing: the post-renderer counts a
// release's objects before Helm applies any of them.
func TestAChartBeyondTheObjectLimitAppliesNothing(t *testing.T) {
	applied := 0
	s := &stamper{release: "r", namespace: "ns", maxObjects: 3, prepare: func(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		applied++
		return obj, nil
	}}
	var in strings.Builder
	for i := range 4 {
		fmt.Fprintf(&in, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm%d\n  annotations:\n    %s: web/templates/cm.yaml\n", i, postrenderFileAnnot)
	}
	_, err := s.Run(bytesBuffer(in.String()))
	if err == nil || !strings.Contains(err.Error(), "renders 4 objects, more than 3") || applied != 0 {
		t.Fatalf("err = %v after %d objects prepared; want the limit, before any", err, applied)
	}
}

// TestRegistryResponsesAreBounded: a registry's JSON answer (a manifest,
// an index, a tag list) beyond maxRegistryJSON is refused while it is
// read, whether or not it says its length.
func TestRegistryResponsesAreBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length
		}
		_, _ = w.Write([]byte(strings.Repeat(" ", maxRegistryJSON+1)))
	}))
	defer srv.Close()
	client := &http.Client{Transport: boundedBodies{rt: http.DefaultTransport}}
	for _, path := range []string{"/sized", "/chunked"} {
		resp, err := client.Get(srv.URL + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "more than") && !strings.Contains(err.Error(), "larger than") {
			t.Errorf("%s: err = %v, want the bound", path, err)
		}
	}
}
