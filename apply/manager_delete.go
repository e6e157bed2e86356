package apply

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/manifests"
)

// Delete deletes an owned object in the background; a missing object is
// not an error.
func (a *Applier) Delete(ctx context.Context, gvr schema.GroupVersionResource, ref manifests.ObjectRef) error {
	policy := metav1.DeletePropagationBackground
	err := a.client.Resource(gvr).Namespace(ref.Namespace).Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s delete failed: %w", ref, err)
	}
	return nil
}

// Prune deletes owned objects that left their Bundle, concurrently within
// the Applier's bound on requests in flight, and returns one Result per
// object (Deleted, or Failed with the error), in order.
func (a *Applier) Prune(ctx context.Context, objs []Desired) []Result {
	results := make([]Result, len(objs))
	a.bounded(ctx, len(objs), func(i int) {
		d := objs[i]
		start := time.Now()
		err := a.Delete(ctx, d.GVR, d.Ref)
		results[i] = Result{Desired: d, Action: Deleted, Err: err, Duration: time.Since(start)}
		if err != nil {
			results[i].Action = Failed
		}
	}, func(i int, err error) {
		results[i] = Result{Desired: objs[i], Action: Failed, Err: fmt.Errorf("%s not deleted: %w", objs[i].Ref, err)}
	})
	return results
}
