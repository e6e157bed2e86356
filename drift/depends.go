package drift

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/drift/depends"
	"github.com/driftwatch/driftwatch/manifests"
)

// waitingFor says what a Bundle waits for before it is applied
// (depends.WaitingFor), read from the Bundle cache; "" means nothing.
func (c *Controller) waitingFor(key types.NamespacedName, b *manifests.Bundle) string {
	if len(b.Spec.DependsOn) == 0 {
		return ""
	}
	return depends.WaitingFor(key.Name, b.Spec.DependsOn, c.cachedBundles(key.Namespace))
}

// cachedBundles returns the cached Bundles of a namespace by name.
func (c *Controller) cachedBundles(namespace string) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, obj := range c.src.Load().bundles.InNamespace(namespace) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			out[u.GetName()] = u
		}
	}
	return out
}

// queueDependents syncs the Bundles of u's namespace that depend on
// something when u's readiness changed.
func (c *Controller) queueDependents(old, u *unstructured.Unstructured) {
	if depends.Ready(old) == depends.Ready(u) {
		return
	}
	c.queueDependentsIn(u.GetNamespace())
}

// queueDependentsIn syncs the Bundles of namespace that depend on others:
// one of those others changed, appeared or went away (a dependency created
// after its dependent's sync was otherwise waited for as "not found" for
// good).
func (c *Controller) queueDependentsIn(namespace string) {
	for name, b := range c.cachedBundles(namespace) {
		if deps, found, _ := unstructured.NestedSlice(b.Object, "spec", "dependsOn"); found && len(deps) > 0 {
			c.queue.Add(types.NamespacedName{Namespace: namespace, Name: name})
		}
	}
}
