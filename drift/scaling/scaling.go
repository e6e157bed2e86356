// Package scaling knows what scales the objects a Bundle owns: the
// HorizontalPodAutoscalers that scale them (an index the drift controller
// feeds from informer events), and, for the kinds with a /scale
// subresource, the resource that serves it and the replica count an
// object declares. It is pure.
package scaling

import (
	"encoding/json"
	"fmt"
	"iter"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

// ReplicasField is the field an autoscaler takes from a Bundle.
const ReplicasField = ".spec.replicas"

// Resources are the built-in kinds whose replica count can be changed
// through /scale, by the resource that serves it.
var Resources = map[schema.GroupKind]string{
	{Group: "apps", Kind: "Deployment"}: "deployments", {Group: "apps", Kind: "StatefulSet"}: "statefulsets",
	{Group: "apps", Kind: "ReplicaSet"}: "replicasets",
}

// Replicas returns the replica count that an object of kind gk declares
// in its JSON; ok is false for kinds without /scale and objects that
// declare none.
func Replicas(gk schema.GroupKind, objJSON []byte) (int64, bool) {
	if _, scalable := Resources[gk]; !scalable || objJSON == nil {
		return 0, false
	}
	var obj struct {
		Spec struct {
			Replicas *int64 `json:"replicas"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(objJSON, &obj); err != nil || obj.Spec.Replicas == nil {
		return 0, false
	}
	return *obj.Spec.Replicas, true
}

// Autoscalers is the index of the HorizontalPodAutoscalers in namespaces
// with owned workloads: which object each scales. An owned object that an
// autoscaler scales has its .spec.replicas left to it in every mode — not
// drift, not corrected, not guarded, dropped from applies once the
// autoscaler holds it — as if the Bundle listed it in spec.drift.ignore.
// Its lock is a leaf: it may be taken under any other.
type Autoscalers struct {
	mu      sync.Mutex
	targets map[types.NamespacedName]manifests.ObjectRef // autoscaler → what it scales
	by      map[manifests.ObjectRef]string               // what is scaled → autoscaler name
}

// NewAutoscalers returns an empty index.
func NewAutoscalers() *Autoscalers {
	return &Autoscalers{targets: map[types.NamespacedName]manifests.ObjectRef{}, by: map[manifests.ObjectRef]string{}}
}

// Set records that the autoscaler key scales target (nil: nothing, or it
// is gone) and returns the objects whose autoscaler changed.
func (a *Autoscalers) Set(key types.NamespacedName, target *manifests.ObjectRef) []manifests.ObjectRef {
	a.mu.Lock()
	defer a.mu.Unlock()
	var changed []manifests.ObjectRef
	if old, ok := a.targets[key]; ok && (target == nil || old != *target) {
		delete(a.targets, key)
		if a.by[old] == key.Name {
			delete(a.by, old)
		}
		changed = append(changed, old)
	}
	if target != nil && a.by[*target] != key.Name {
		a.targets[key] = *target
		a.by[*target] = key.Name
		changed = append(changed, *target)
	}
	return changed
}

// Of returns the autoscaler that scales ref, "" if none.
func (a *Autoscalers) Of(ref manifests.ObjectRef) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.by[ref]
}

// IgnoreRules are, for the objects of refs that an autoscaler scales,
// ignore rules that leave ReplicasField to it.
func (a *Autoscalers) IgnoreRules(refs iter.Seq[manifests.ObjectRef]) []manifests.IgnoreRule {
	var out []manifests.IgnoreRule
	for ref := range refs {
		if a.Of(ref) != "" {
			out = append(out, manifests.IgnoreRule{Group: ref.Group, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name,
				FieldPaths: []string{ReplicasField}})
		}
	}
	// In one order, so that what is generated from them is the same for
	// the same objects.
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		return x.Group+"/"+x.Kind+"/"+x.Namespace+"/"+x.Name < y.Group+"/"+y.Kind+"/"+y.Namespace+"/"+y.Name
	})
	return out
}

// Describe names, sorted, the objects of refs that an autoscaler scales,
// and the autoscaler: "Deployment/shop/web (HorizontalPodAutoscaler web)".
func (a *Autoscalers) Describe(refs iter.Seq[manifests.ObjectRef]) []string {
	var out []string
	for ref := range refs {
		if name := a.Of(ref); name != "" {
			out = append(out, fmt.Sprintf("%s/%s/%s (HorizontalPodAutoscaler %s)", ref.Kind, ref.Namespace, ref.Name, name))
		}
	}
	sort.Strings(out)
	return out
}
