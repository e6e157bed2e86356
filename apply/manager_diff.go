package apply

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// DryRun server-side applies without persisting and returns what the
// server would store.
func (a *Applier) DryRun(ctx context.Context, d Desired, opts ApplyOptions) (*unstructured.Unstructured, error) {
	obj, err := a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.ApplyPatchType, d.JSON,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager, Force: &opts.Force, DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return nil, fmt.Errorf("%s dry-run failed: %w", d.Ref, err)
	}
	return obj, nil
}
