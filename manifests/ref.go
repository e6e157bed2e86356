package manifests

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ObjectRef identifies an object: the map key and queue item everywhere in
// driftwatch. Version is deliberately absent: one object, many versions.
type ObjectRef struct {
	Group     string
	Kind      string
	Namespace string
	Name      string
}

// RefOf returns the identity of obj.
func RefOf(obj *unstructured.Unstructured) ObjectRef {
	gvk := obj.GroupVersionKind()
	return ObjectRef{Group: gvk.Group, Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// GroupKind returns the object's group and kind.
func (r ObjectRef) GroupKind() schema.GroupKind {
	return schema.GroupKind{Group: r.Group, Kind: r.Kind}
}

// String formats the reference as Kind.group/namespace/name, the one format
// used in errors, events, logs and status messages: "Deployment.apps/web/api",
// "ConfigMap/web/settings", "Namespace/web".
func (r ObjectRef) String() string {
	s := r.Kind
	if r.Group != "" {
		s += "." + r.Group
	}
	if r.Namespace != "" {
		s += "/" + r.Namespace
	}
	return s + "/" + r.Name
}
