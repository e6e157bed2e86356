package drift

import (
	"maps"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/drift/scaling"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

// replicasField is the field an autoscaler takes from a Bundle.
const replicasField = scaling.ReplicasField

// OnAutoscaler implements watch.Handler: an autoscaler that starts or
// stops scaling an owned object re-syncs its Bundle, whose next apply,
// guard and status follow.
func (c *Controller) OnAutoscaler(obj *watch.Object, gone bool) {
	key := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	var target *manifests.ObjectRef
	if t := obj.ScaleTarget; t != nil && !gone {
		gv, _ := schema.ParseGroupVersion(t.APIVersion)
		target = &manifests.ObjectRef{Group: gv.Group, Kind: t.Kind, Namespace: obj.Namespace, Name: t.Name}
	}
	for _, ref := range c.scalers.Set(key, target) {
		owner, ok := c.ownerFor(ref.Group, ref.Kind, ref.Namespace, ref.Name)
		if !ok {
			continue
		}
		if s, _, found := c.lookup(owner.gvr, ref.Namespace, ref.Name, nil); found {
			c.queue.Add(s.key)
		}
	}
}

// ignoreFor returns the field paths of ref that are never drift: the
// Bundle's ignore rules, and .spec.replicas where an autoscaler scales it.
// The caller holds s.mu, or is the Bundle's sync.
func (c *Controller) ignoreFor(s *bundleState, ref manifests.ObjectRef) []string {
	out := s.ignoreFor(ref)
	if c.scalers.Of(ref) != "" {
		out = append(out, replicasField)
	}
	return out
}

// autoscaledRules are ignore rules for the Bundle's objects that an
// autoscaler scales, for its guard. The caller holds s.mu, or is the
// Bundle's sync.
func (c *Controller) autoscaledRules(s *bundleState) []manifests.IgnoreRule {
	return c.scalers.IgnoreRules(maps.Keys(s.desired))
}

// autoscaled says, for the status, which owned objects have their
// replicas left to an autoscaler. The caller holds s.mu.
func (c *Controller) autoscaled(s *bundleState) []string {
	return c.scalers.Describe(maps.Keys(s.desired))
}
