package drift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// ensureFinalizer adds the cleanup finalizer to a Bundle.
func (c *Controller) ensureFinalizer(ctx context.Context, u *unstructured.Unstructured) error {
	for _, f := range u.GetFinalizers() {
		if f == Finalizer {
			return nil
		}
	}
	patch := fmt.Appendf(nil, `{"metadata":{"finalizers":[%q],"resourceVersion":%q}}`, Finalizer, u.GetResourceVersion())
	_, err := c.sourceClient().Resource(manifests.BundleGVR).Namespace(u.GetNamespace()).
		Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: c.applier.FieldManager()})
	if err != nil {
		return fmt.Errorf("adding finalizer to bundle %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// finalize deletes a deleted Bundle's objects (unless it keeps them), then
// releases the Bundle.
func (c *Controller) finalize(ctx context.Context, key types.NamespacedName, u *unstructured.Unstructured, b *manifests.Bundle) error {
	act, access, refused, err := c.cleanupAccess(key, b)
	if err != nil {
		return err
	}
	if b != nil && b.Spec.Drift.Guarded() {
		// First: what the Bundle owned is no longer guarded. A policy
		// that cannot be removed does not keep the Bundle: it is owned by
		// the agent's namespace and labelled with the Bundle.
		if err := c.unguard(ctx, key); err != nil {
			c.warn(key, "GuardFailed", "the admission policy could not be removed (kubectl delete validatingadmissionpolicies,validatingadmissionpolicybindings -l %s=%s): %v",
				ownership.BundleLabel, ownership.BundleLabelValue(key), err)
		}
	}
	s, err := c.finalState(ctx, key, act, refused)
	if err != nil {
		c.warn(key, "CleanupFailed", "%v", err)
		return err
	}
	switch {
	case s == nil:
		// Refused, and nothing applied as an admitted account by this
		// process: its objects and inventory stay for an administrator.
	case b != nil && !b.Spec.KeepResourcesOnDelete && b.Spec.Helm != nil && !refused:
		// Helm uninstalls its release: hooks run, resource policies hold.
		if err := c.pipeline.Uninstall(ctx, b, c.cluster(), access); err != nil {
			c.warn(key, "UninstallFailed", "%v", err)
			return err
		}
	case b != nil && !b.Spec.KeepResourcesOnDelete:
		refs := s.inv.With(refsOfMap(s.desired)...).Objects()
		if failed, errs := c.deleteMembers(ctx, s, refs); len(failed) > 0 {
			// Still listed: the next try deletes them.
			if err := c.writeInventory(ctx, s, ownership.NewInventory(failed...)); err != nil {
				errs = append(errs, err)
			}
			c.warn(key, "CleanupFailed", "%v", errors.Join(errs...))
			return errors.Join(errs...)
		}
	}
	if s != nil {
		if err := c.applier.Delete(ctx, ownership.ParentGVR, s.set.ParentRef()); err != nil {
			return err
		}
	}
	return c.removeFinalizer(ctx, key, u)
}

// cleanupAccess is who deletes a deleted Bundle's objects: its own
// account, as it applied them (a sync of this process may not have chosen
// it yet); refused says the rules no longer allow it any, and then only
// what a sync of this process admitted may clean up, as it applied.
func (c *Controller) cleanupAccess(key types.NamespacedName, b *manifests.Bundle) (act *apply.Applier, access manifests.Access, refused bool, err error) {
	if b == nil {
		return nil, access, false, nil
	}
	access, err = c.pipeline.AccessFor(b, c.cluster())
	var r *manifests.Refused
	switch {
	case errors.As(err, &r):
		c.warn(key, "CleanupRefused", "%v; only objects this agent applied as the Bundle's account since it started are deleted", err)
		return nil, access, true, nil
	case err != nil:
		c.warn(key, "CleanupFailed", "%v", err)
		return nil, access, false, err
	}
	if act, err = c.applierFor(access); err != nil {
		c.warn(key, "CleanupFailed", "%v", err)
	}
	return act, access, false, err
}

// removeFinalizer removes the cleanup finalizer from a deleted Bundle and
// forgets it.
func (c *Controller) removeFinalizer(ctx context.Context, key types.NamespacedName, u *unstructured.Unstructured) error {
	var kept []string
	for _, f := range u.GetFinalizers() {
		if f != Finalizer {
			kept = append(kept, f)
		}
	}
	patch := map[string]any{"metadata": map[string]any{"finalizers": kept, "resourceVersion": u.GetResourceVersion()}}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.sourceClient().Resource(manifests.BundleGVR).Namespace(key.Namespace).
		Patch(ctx, key.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: c.applier.FieldManager()})
	if err != nil {
		return fmt.Errorf("removing finalizer from bundle %s: %w", key, err)
	}
	c.forget(key)
	return nil
}

// finalState is the state a deleted Bundle is cleaned up from, held by
// this process or else made from its ApplySet parent (after a restart or a
// change of leader, the inventory is all that says what it owns), with
// corrections and drift reports off; nil when the Bundle was refused and
// this process applied nothing of it as an admitted account.
func (c *Controller) finalState(ctx context.Context, key types.NamespacedName, act *apply.Applier, refused bool) (*bundleState, error) {
	s := c.state(key)
	if s != nil {
		s.mu.Lock()
		if s.act == nil {
			s.act = act
		}
		s.mu.Unlock()
	}
	if s == nil {
		if refused {
			return nil, nil
		}
		s = newBundleState(key, ownership.NewSet(key, c.opts.ParentNamespace))
		s.act = act
		held := map[schema.GroupVersionResource]bool{}
		defer c.release(held)
		if err := c.loadInventory(ctx, s, held); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if refused && s.act == nil {
		return nil, nil
	}
	s.spec.Paused = true // no corrections while we clean up
	s.releasing = true   // and no drift reported: the uninstall deletes
	return s, nil
}

func refsOfMap[V any](m map[manifests.ObjectRef]V) []manifests.ObjectRef {
	out := make([]manifests.ObjectRef, 0, len(m))
	for ref := range m {
		out = append(out, ref)
	}
	return out
}

// forgetState drops a Bundle's state only: its next sync starts anew.
func (c *Controller) forgetState(key types.NamespacedName) {
	c.mu.Lock()
	delete(c.states, key)
	delete(c.byLabel, ownership.BundleLabelValue(key))
	c.mu.Unlock()
}

// forget drops a Bundle's state and metrics.
func (c *Controller) forget(key types.NamespacedName) {
	c.watchReads(key, nil)
	c.mu.Lock()
	delete(c.states, key)
	delete(c.byLabel, ownership.BundleLabelValue(key))
	c.mu.Unlock()
	c.helmRetry.Forget(key)
	c.metrics.ForgetBundle(key.Namespace, key.Name)
	c.stopUnusedWatches()
	c.watchPods()
}
