package kustomize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/driftwatch/driftwatch/manifests"
)

// JSONPatchKind is the kind of a JSON 6902 patch in an overlay file:
//
//	kind: JSONPatch
//	target: {group: apps, kind: Deployment, name: web, namespace: ""}
//	patch: [{op: replace, path: /spec/replicas, value: 3}]
const JSONPatchKind = "JSONPatch"

// overlay is one patch of an overlay file.
type overlay struct {
	source string // file#document
	// target: group, kind and name always; namespace when given.
	group, kind, name, namespace string
	json6902                     jsonpatch.Patch
	strategic                    []byte // a strategic merge patch (JSON)
	matched                      bool
}

func (o *overlay) selects(obj *unstructured.Unstructured) bool {
	gvk := obj.GroupVersionKind()
	return gvk.Group == o.group && gvk.Kind == o.kind && obj.GetName() == o.name &&
		(o.namespace == "" || obj.GetNamespace() == "" || obj.GetNamespace() == o.namespace)
}

// copyLimit sets json-patch's process-wide bound on copies once.
var copyLimit sync.Once

// apply patches obj in place.
func (o *overlay) apply(obj *unstructured.Unstructured) error {
	orig, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	var out []byte
	switch {
	case o.json6902 != nil:
		copyLimit.Do(func() {
			// What "copy" operations may add to one document, in all:
			// a few of them, each doubling a value, would need memory
			// beyond any Bundle's (the API server sets the same bound).
			jsonpatch.AccumulatedCopySizeLimit = manifests.HardMaxBytes
		})
		out, err = o.json6902.Apply(orig)
	default:
		out, err = strategicMerge(obj.GroupVersionKind(), orig, o.strategic)
	}
	if err != nil {
		return fmt.Errorf("overlay %s on %s %s: %w", o.source, o.kind, o.name, err)
	}
	patched := map[string]any{}
	if err := json.Unmarshal(out, &patched); err != nil {
		return fmt.Errorf("overlay %s: %w", o.source, err)
	}
	obj.Object = patched
	return nil
}

// strategicMerge applies a strategic merge patch with the built-in type's
// patch strategies; kinds the client's scheme does not know (custom
// resources) get a JSON merge patch, as kubectl does.
func strategicMerge(gvk schema.GroupVersionKind, orig, patch []byte) ([]byte, error) {
	typed, err := scheme.Scheme.New(gvk)
	if err != nil {
		return jsonpatch.MergePatch(orig, patch)
	}
	return strategicpatch.StrategicMergePatch(orig, patch, typed)
}

// parseOverlays reads the overlay files named among resources.
func parseOverlays(resources []manifests.Resource, files []string) ([]*overlay, error) {
	var out []*overlay
	for _, f := range files {
		var res *manifests.Resource
		for i := range resources {
			if resources[i].Name == f {
				res = &resources[i]
			}
		}
		if res == nil {
			return nil, fmt.Errorf("yaml overlay %s: no such resource in the bundle", f)
		}
		raw, err := manifests.ResourceBytes(*res)
		if err != nil {
			return nil, fmt.Errorf("yaml overlay %s: %w", f, err)
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for i := 1; ; i++ {
			var doc map[string]any
			if err := d.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("yaml overlay %s#%d: %w", f, i, err)
			}
			if len(doc) == 0 {
				continue
			}
			o, err := overlayOf(doc, fmt.Sprintf("%s#%d", f, i))
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
	}
	return out, nil
}

func overlayOf(doc map[string]any, source string) (*overlay, error) {
	u := &unstructured.Unstructured{Object: doc}
	if u.GetKind() == JSONPatchKind {
		target, _, _ := unstructured.NestedStringMap(doc, "target")
		o := &overlay{source: source, group: target["group"], kind: target["kind"], name: target["name"], namespace: target["namespace"]}
		if o.kind == "" || o.name == "" {
			return nil, fmt.Errorf("yaml overlay %s: a JSONPatch needs target.kind and target.name", source)
		}
		ops, err := json.Marshal(doc["patch"])
		if err != nil {
			return nil, fmt.Errorf("yaml overlay %s: %w", source, err)
		}
		if o.json6902, err = jsonpatch.DecodePatch(ops); err != nil {
			return nil, fmt.Errorf("yaml overlay %s: patch: %w", source, err)
		}
		return o, nil
	}
	gvk := u.GroupVersionKind()
	if gvk.Kind == "" || u.GetName() == "" {
		return nil, fmt.Errorf("yaml overlay %s: a strategic merge patch names its target: apiVersion, kind and metadata.name", source)
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml overlay %s: %w", source, err)
	}
	return &overlay{source: source, group: gvk.Group, kind: gvk.Kind, name: u.GetName(), namespace: u.GetNamespace(), strategic: body}, nil
}

// patchAll applies the overlays to every object they select, in order;
// mark records which matched (only the render does: corrections read
// objects concurrently).
func patchAll(overlays []*overlay, obj *unstructured.Unstructured, mark bool) error {
	for _, o := range overlays {
		if o.selects(obj) {
			if mark {
				o.matched = true
			}
			if err := o.apply(obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// overlaySource hands out objects as the render did: patched.
type overlaySource struct {
	inner    manifests.Source
	overlays []*overlay
}

func (s overlaySource) Object(loc manifests.Locator) (*unstructured.Unstructured, error) {
	obj, err := s.inner.Object(loc)
	if err != nil {
		return nil, err
	}
	if err := patchAll(s.overlays, obj, false); err != nil {
		return nil, err
	}
	return obj, nil
}

// Patch applies yaml overlays — files among resources — to the rendered
// objects, and makes out's Source hand out objects patched alike. An
// overlay that selects no object is an error, as a patch that cannot
// apply is (manifests.Pipeline.Overlays).
func Patch(out *manifests.Output, resources []manifests.Resource, files []string) error {
	overlays, err := parseOverlays(resources, files)
	if err != nil {
		return err
	}
	for _, o := range out.Objects {
		if err := patchAll(overlays, o.Object, true); err != nil {
			return err
		}
	}
	for _, o := range overlays {
		if !o.matched {
			return fmt.Errorf("yaml overlay %s matches no object (%s %s)", o.source, o.kind, o.name)
		}
	}
	// Corrections read objects from the patched source; the overlays'
	// matched marks are no longer needed.
	out.Source = overlaySource{inner: out.Source, overlays: overlays}
	return nil
}
