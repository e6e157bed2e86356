package watch

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTrimKeepsWhatDriftNeeds(t *testing.T) {
	now := metav1.Now()
	in := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "a", Namespace: "n", UID: "u", ResourceVersion: "7", Generation: 2,
			Labels: map[string]string{"driftwatch.io/bundle": "n.b"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": "{...a large document...}",
				"driftwatch.io/applied-hash":                       "abc",
			},
			OwnerReferences:   []metav1.OwnerReference{{Name: "rs"}},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "driftwatch"}},
			Finalizers:        []string{"f"},
			DeletionTimestamp: &now,
		},
	}
	out, err := Trim(in)
	if err != nil {
		t.Fatal(err)
	}
	o := out.(*metav1.PartialObjectMetadata)
	if o.Name != "a" || o.Namespace != "n" || o.UID != "u" || o.ResourceVersion != "7" || o.Generation != 2 ||
		o.Labels["driftwatch.io/bundle"] != "n.b" || len(o.OwnerReferences) != 1 || len(o.ManagedFields) != 1 ||
		o.DeletionTimestamp == nil {
		t.Errorf("Trim lost what drift detection needs: %+v", o.ObjectMeta)
	}
	if len(o.Annotations) != 1 || o.Annotations["driftwatch.io/applied-hash"] != "abc" {
		t.Errorf("annotations = %v, want only driftwatch's", o.Annotations)
	}
	if len(o.Finalizers) != 0 || !o.CreationTimestamp.IsZero() {
		t.Errorf("finalizers or creation time kept: %v %v", o.Finalizers, o.CreationTimestamp)
	}
	if _, err := Trim("not an object"); err != nil {
		t.Errorf("Trim of another type: %v", err)
	}
}
