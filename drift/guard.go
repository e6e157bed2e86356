package drift

import (
	"context"
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/drift/scaling"
	"github.com/driftwatch/driftwatch/guard"
	"github.com/driftwatch/driftwatch/manifests"
)

// guardBundle keeps the admission policy of a Bundle in Prevent or Warn
// mode in line with what it owns, or removes it when the Bundle is in
// neither. It writes only when the policy's content changed. An error —
// no ValidatingAdmissionPolicy API, no right to write it — is recorded
// for the Guarded condition: the Bundle keeps correcting.
func (c *Controller) guardBundle(ctx context.Context, s *bundleState, p *plan) {
	if !s.spec.Drift.Guarded() {
		if s.guardHash != "" || s.guardErr != "" {
			err := c.unguard(ctx, s.key)
			s.mu.Lock()
			s.guardHash, s.guardErr = "", ""
			if err != nil {
				s.guardErr = err.Error()
			}
			s.mu.Unlock()
		}
		return
	}
	objs := guard.Objects(c.guardSpec(ctx, s, p))
	hash, err := guard.Hash(objs)
	if err == nil && hash == s.guardHash {
		return
	}
	if err == nil {
		err = c.writeGuard(ctx, s, objs)
	}
	s.mu.Lock()
	if err != nil {
		s.guardHash, s.guardErr = "", err.Error()
	} else {
		s.guardHash, s.guardErr = hash, ""
	}
	s.mu.Unlock()
	if err != nil {
		c.warn(s.key, "GuardFailed", "admission policy not in place; drift is still corrected: %v", err)
	}
}

// guardSpec is what a Bundle's guard protects: its owned fields against
// everyone but the agent and the Bundle's account, minus what its ignore
// rules leave to others.
func (c *Controller) guardSpec(ctx context.Context, s *bundleState, p *plan) guard.Spec {
	g := guard.Spec{Bundle: s.key, Warn: s.spec.Drift.Mode == manifests.DriftWarn, FieldManager: c.applier.FieldManager(),
		Ignore: s.spec.Drift.Ignore, Deletion: s.spec.Drift.PreventDeletion, Owner: c.guardOwner(ctx)}
	if c.policy.AgentUser != "" {
		g.Exempt = append(g.Exempt, c.policy.AgentUser)
	}
	if sa := s.access.ServiceAccount; sa.Name != "" {
		g.Exempt = append(g.Exempt, serviceaccount.MakeUsername(sa.Namespace, sa.Name))
	}
	g.Ignore = append(append([]manifests.IgnoreRule(nil), g.Ignore...), c.autoscaledRules(s)...)
	for ref, n := range p.replicas {
		if c.ignored(s, ref, replicasField) {
			continue // left to another manager: not guarded
		}
		g.Scale = append(g.Scale, guard.ScaleTarget{Resource: schema.GroupResource{Group: ref.Group, Resource: scaling.Resources[ref.GroupKind()]},
			Namespace: ref.Namespace, Name: ref.Name, Replicas: n})
	}
	return g
}

// ignored reports whether field of ref is never drift (ignoreFor).
func (c *Controller) ignored(s *bundleState, ref manifests.ObjectRef, field string) bool {
	return detect.Ignored(field, c.ignoreFor(s, ref))
}

// writeGuard applies the guard's objects as the agent and removes a
// scale binding that is no longer wanted.
func (c *Controller) writeGuard(ctx context.Context, s *bundleState, objs []*unstructured.Unstructured) error {
	hasScale := false
	for _, o := range objs {
		gvr := guard.PolicyGVR
		if o.GetKind() == "ValidatingAdmissionPolicyBinding" {
			gvr = guard.BindingGVR
			hasScale = hasScale || o.GetName() == guard.Name(s.key)+".scale"
		}
		d, err := apply.NewDesired(o, gvr, "")
		if err != nil {
			return err
		}
		if r := c.applier.Apply(ctx, d, apply.ApplyOptions{Force: true}); r.Err != nil {
			return r.Err
		}
	}
	if !hasScale {
		return c.applier.Delete(ctx, guard.BindingGVR, manifests.ObjectRef{Name: guard.Name(s.key) + ".scale"})
	}
	return nil
}

// unguard deletes a Bundle's policy and bindings.
func (c *Controller) unguard(ctx context.Context, key types.NamespacedName) error {
	name := guard.Name(key)
	return errors.Join(
		c.applier.Delete(ctx, guard.BindingGVR, manifests.ObjectRef{Name: name}),
		c.applier.Delete(ctx, guard.BindingGVR, manifests.ObjectRef{Name: name + ".scale"}),
		c.applier.Delete(ctx, guard.PolicyGVR, manifests.ObjectRef{Name: name}))
}

// guardOwner is the owner of every guard: the agent's namespace in the
// target cluster, so that an uninstall that deletes it deletes them
// (a cluster-scoped object may only be owned by a cluster-scoped one).
// Read once per process; nil while it cannot be read.
func (c *Controller) guardOwner(ctx context.Context) *metav1.OwnerReference {
	c.ownerMu.Lock()
	defer c.ownerMu.Unlock()
	if c.owner != nil {
		return c.owner
	}
	ns, err := c.applier.GetMetadata(ctx, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, manifests.ObjectRef{Kind: "Namespace", Name: c.opts.ParentNamespace})
	if err != nil || ns == nil {
		c.logger.V(2).Info("The agent's namespace cannot be read; admission policies get no owner", "err", err)
		return nil
	}
	c.owner = &metav1.OwnerReference{APIVersion: "v1", Kind: "Namespace", Name: ns.Name, UID: ns.UID}
	return c.owner
}

// unguardLeftover removes the policy of a Bundle that is not (or no
// longer) guarded but may have been while no agent held its state. The
// policies that exist are listed once per process (existingGuards), so
// that a Bundle that never was guarded costs no request.
func (c *Controller) unguardLeftover(ctx context.Context, s *bundleState) {
	if s.spec.Drift.Guarded() || !c.existingGuards(ctx)[guard.Name(s.key)] {
		return
	}
	if err := c.unguard(ctx, s.key); err != nil {
		c.warn(s.key, "GuardFailed", "the admission policy of a Bundle no longer in Prevent or Warn mode could not be removed: %v", err)
	}
}

// existingGuards lists, once, the names of the admission policies that
// agents wrote; none when they cannot be listed (no API, no right: none of
// ours either).
func (c *Controller) existingGuards(ctx context.Context) map[string]bool {
	c.guardsOnce.Do(func() {
		c.guardsAtStart = map[string]bool{}
		objs, err := c.applier.ListMetadata(ctx, guard.PolicyGVR, "", guard.Selector)
		if err != nil {
			c.logger.V(2).Info("Admission policies cannot be listed; none are taken for leftovers", "err", err)
			return
		}
		for name := range objs {
			c.guardsAtStart[name] = true
		}
	})
	return c.guardsAtStart
}
