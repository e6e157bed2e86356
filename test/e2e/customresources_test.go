package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

func TestCRDAndItsCustomResourcesInOneBundle(t *testing.T) {
	ns, _ := setup(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	spec := `
defaultNamespace: ` + ns + `
resources:
- name: widget.yaml
  content: |
    apiVersion: ` + group + `/v1
    kind: Widget
    metadata: {name: w1}
    spec: {size: 3}
- name: crd.yaml
  content: |
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.` + group + `}
    spec:
      group: ` + group + `
      names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec: {type: object, properties: {size: {type: integer}}}
`
	createBundle(t, ns, "widgets", spec)
	waitBundle(t, ns, "widgets", "Ready", ready)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
	t.Cleanup(func() {
		_ = dyn.Resource(crdGVR).Delete(context.WithoutCancel(t.Context()), "widgets."+group, metav1.DeleteOptions{}) // cluster-scoped: not removed with the namespace
	})
	kubectl(t, "patch", "-n", ns, "widgets."+group+"/w1", "--type=merge", "-p", `{"spec":{"size":9}}`)
	waitFor(t, "the custom resource reverted", func() (bool, string) {
		w, err := dyn.Resource(gvr).Namespace(ns).Get(t.Context(), "w1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		size := w.Object["spec"].(map[string]any)["size"]
		return fmt.Sprint(size) == "3", fmt.Sprint(size)
	})
	waitEvent(t, ns, "widgets", "DriftCorrected", ".spec.size", "kubectl-patch")
}

func TestChangedListKeyInACustomResourceIsRepaired(t *testing.T) {
	ns, _ := setup(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	spec := `
defaultNamespace: ` + ns + `
resources:
- name: crd.yaml
  content: |
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: gateways.` + group + `}
    spec:
      group: ` + group + `
      names: {kind: Gateway, plural: gateways, singular: gateway, listKind: GatewayList}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  listeners:
                    type: array
                    x-kubernetes-list-type: map
                    x-kubernetes-list-map-keys: [port]
                    items:
                      type: object
                      required: [port]
                      properties:
                        port: {type: integer}
                        name: {type: string}
    ---
    apiVersion: ` + group + `/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      listeners:
      - {port: 443, name: https}
`
	createBundle(t, ns, "gw", spec)
	waitBundle(t, ns, "gw", "Ready", ready)
	t.Cleanup(func() {
		_ = dyn.Resource(crdGVR).Delete(context.WithoutCancel(t.Context()), "gateways."+group, metav1.DeleteOptions{}) // cluster-scoped
	})
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gateways"}
	_, err := dyn.Resource(gvr).Namespace(ns).Patch(t.Context(), "gw", types.JSONPatchType,
		[]byte(`[{"op":"replace","path":"/spec/listeners/0/port","value":444}]`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "exactly the listener on 443 again", func() (bool, string) {
		gw, err := dyn.Resource(gvr).Namespace(ns).Get(t.Context(), "gw", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ls, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
		return len(ls) == 1 && fmt.Sprint(ls[0].(map[string]any)["port"]) == "443", fmt.Sprint(ls)
	})
	waitEvent(t, ns, "gw", "DriftCorrected", ".spec.listeners[port=443]")
}
