package manifests

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
)

func gz(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	w.Close()
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func TestDecode(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
	tests := []struct {
		name      string
		resources []Resource
		wantObjs  []string // sources
		wantErrs  []string // substrings, in order
	}{
		{"multi-document YAML with comments and empty documents",
			[]Resource{{Name: "f.yaml", Content: "# top\n---\n" + cm + "---\n---\n# only a comment\n---\n" + strings.Replace(cm, "name: a", "name: b", 1)}},
			[]string{"f.yaml#2", "f.yaml#4"}, nil}, // numbered as the YAML reader splits: an empty document between two separators is not counted
		{"JSON", []Resource{{Name: "f.json", Content: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`}},
			[]string{"f.json#1"}, nil},
		{"base64", []Resource{{Name: "f", Encoding: EncodingBase64, Content: base64.StdEncoding.EncodeToString([]byte(cm))}},
			[]string{"f#1"}, nil},
		{"base64+gzip", []Resource{{Name: "f", Encoding: EncodingBase64Gzip, Content: gz(cm)}},
			[]string{"f#1"}, nil},
		{"a List is expanded",
			[]Resource{{Name: "l.yaml", Content: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n"}},
			[]string{"l.yaml#1[0]", "l.yaml#1[1]"}, nil},
		{"one broken document does not hide the others",
			[]Resource{{Name: "bad.yaml", Content: "kind: [\n"}, {Name: "ok.yaml", Content: cm}},
			[]string{"ok.yaml#1"}, []string{"bad.yaml#1: invalid YAML"}},
		{"missing kind and name",
			[]Resource{{Name: "f.yaml", Content: "apiVersion: v1\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\n"}},
			nil, []string{"f.yaml#1: apiVersion and kind are required", "f.yaml#2: ConfigMap: metadata.name is required"}},
		{"generateName is refused",
			[]Resource{{Name: "f.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: a-}\n"}},
			nil, []string{"generateName is not supported"}},
		{"bad encodings",
			[]Resource{{Name: "a", Encoding: EncodingBase64, Content: "%%%"}, {Name: "b", Encoding: "rot13", Content: cm}, {Name: "c", Encoding: EncodingBase64Gzip, Content: base64.StdEncoding.EncodeToString([]byte("not gzip"))}},
			nil, []string{"a: invalid base64", `b: unknown encoding "rot13"`, "c: invalid gzip"}},
		{"too large once decoded",
			[]Resource{{Name: "bomb", Encoding: EncodingBase64Gzip, Content: gz(strings.Repeat("a", MaxDecodedBytes+1))}},
			nil, []string{"bomb: the bundle's resources exceed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, errs := Decode(tt.resources)
			wantDecoded(t, objs, errs, tt.wantObjs, tt.wantErrs)
		})
	}
	if _, errs := Decode(nil); len(errs) != 1 || !errors.Is(errs[0], ErrEmptyBundle) {
		t.Errorf("an empty bundle: %v", errs)
	}
}

func TestCRDIsEmbedded(t *testing.T) {
	crd := CRD()
	if crd.GetName() != "bundles.driftwatch.io" || crd.GetKind() != "CustomResourceDefinition" {
		t.Fatalf("embedded CRD: %s %s", crd.GetKind(), crd.GetName())
	}
}

func TestObjectRefString(t *testing.T) {
	for _, tt := range []struct {
		ref  ObjectRef
		want string
	}{
		{ObjectRef{Group: "apps", Kind: "Deployment", Namespace: "web", Name: "api"}, "Deployment.apps/web/api"},
		{ObjectRef{Kind: "ConfigMap", Namespace: "web", Name: "s"}, "ConfigMap/web/s"},
		{ObjectRef{Kind: "Namespace", Name: "web"}, "Namespace/web"},
	} {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.ref, got, tt.want)
		}
	}
}

func TestDecodeAtFindsWhatDecodeFound(t *testing.T) {
	resources := []Resource{
		{Name: "a.yaml", Content: "# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n- {apiVersion: v1, kind: Secret, metadata: {name: c}}\n--- # next\napiVersion: v1\nkind: Secret\nmetadata: {name: e}\ndata: {k: dg==}"},
		{Name: "b.yaml", Encoding: EncodingBase64Gzip, Content: gz("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n")},
		{Name: "crlf.yaml", Content: "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata: {name: f}\r\n---\r\napiVersion: v1\r\nkind: ConfigMap\r\nmetadata: {name: g}\r\n"},
	}
	objs, errs := Decode(resources)
	if len(errs) != 0 || len(objs) != 7 {
		t.Fatalf("Decode: %d objects, errors %v", len(objs), errs)
	}
	for _, o := range objs {
		if o.Locator.Len == 0 && !strings.HasPrefix(o.Source, "crlf.yaml") {
			t.Errorf("%s: no span in %+v", o.Source, o.Locator)
		}
		// With the document's span, and without it (the scan).
		scan := o.Locator
		scan.Offset, scan.Len = 0, 0
		for _, loc := range []Locator{o.Locator, scan} {
			got, err := DecodeAt(resources, loc)
			if err != nil {
				t.Fatalf("%s at %+v: %v", o.Source, loc, err)
			}
			if !equality.Semantic.DeepEqual(got.Object, o.Object.Object) {
				t.Errorf("%s at %+v: got %v, want %v", o.Source, loc, got.Object, o.Object.Object)
			}
		}
	}
	// A span that no longer fits the content falls back to the scan.
	short := []Resource{{Name: "a.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}}
	if got, err := DecodeAt(short, Locator{Doc: 1, Item: -1, Offset: 40, Len: 400}); err != nil || got.GetName() != "a" {
		t.Errorf("stale span: %v, %v", got, err)
	}
	if _, err := DecodeAt(resources, Locator{Resource: 0, Doc: 99, Item: -1}); err == nil {
		t.Error("a missing document was found")
	}
}

// wantDecoded compares what a decode gave with the sources of the objects
// and the parts of the errors wanted, in order.
func wantDecoded(t *testing.T, objs []Object, errs []error, wantObjs, wantErrs []string) {
	t.Helper()
	var got []string
	for _, o := range objs {
		got = append(got, o.Source)
	}
	if strings.Join(got, ",") != strings.Join(wantObjs, ",") {
		t.Errorf("objects %q, want %q", got, wantObjs)
	}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors %v, want %d matching %q", errs, len(wantErrs), wantErrs)
	}
	for i, e := range errs {
		if !strings.Contains(e.Error(), wantErrs[i]) {
			t.Errorf("error %d = %.300q, want it to contain %q", i, e, wantErrs[i])
		}
	}
}
