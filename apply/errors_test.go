package apply

import (
	"fmt"
	"reflect"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// conflict builds the error kube-apiserver returns for an apply conflict
// (k8s.io/apimachinery/pkg/util/managedfields/internal.NewConflictError),
// wrapped as Apply wraps it.
func conflict(causes ...metav1.StatusCause) error {
	err := apierrors.NewApplyConflict(causes, "Apply failed with conflicts")
	return fmt.Errorf("Deployment.apps/web/api apply failed: %w", err)
}

func TestConflictManagers(t *testing.T) {
	cause := func(msg, field string) metav1.StatusCause {
		return metav1.StatusCause{Type: metav1.CauseTypeFieldManagerConflict, Message: msg, Field: field}
	}
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"one manager", conflict(cause(`conflict with "kubectl-edit" using apps/v1`, ".spec.replicas")), []string{"kubectl-edit"}},
		{"a subresource's manager, two fields, and another manager",
			conflict(cause(`conflict with "kubectl" with subresource "scale" using apps/v1`, ".spec.replicas"),
				cause(`conflict with "other-tool" using apps/v1`, ".data.k"),
				cause(`conflict with "kubectl" with subresource "scale" using apps/v1`, ".spec.paused")),
			[]string{"kubectl", "other-tool"}},
		{"no causes", conflict(), []string{"unknown"}},
		{"not an API error", fmt.Errorf("connection refused"), []string{"unknown"}},
		{"another kind of 409", apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "a", fmt.Errorf("stale")), []string{"unknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ConflictManagers(tt.err); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ConflictManagers = %q, want %q", got, tt.want)
			}
		})
	}
	if !IsConflict(conflict()) {
		t.Error("an apply conflict is not IsConflict")
	}
}
