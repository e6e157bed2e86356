package apply

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// OwnedFields returns the fields that manager owns by Apply on the main
// resource of obj, from its managedFields.
func OwnedFields(managedFields []metav1.ManagedFieldsEntry, manager string) (*fieldpath.Set, error) {
	set := &fieldpath.Set{}
	for _, e := range managedFields {
		if e.Manager != manager || e.Operation != metav1.ManagedFieldsOperationApply || e.Subresource != "" || e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, fmt.Errorf("managedFields of %s: %w", manager, err)
		}
		set = set.Union(s)
	}
	return set, nil
}

// FieldsByOwner splits obj's managedFields into what manager owns by
// Apply on the main resource and what all other entries hold.
func FieldsByOwner(managedFields []metav1.ManagedFieldsEntry, manager string) (ours, others *fieldpath.Set, err error) {
	ours, others = &fieldpath.Set{}, &fieldpath.Set{}
	for _, e := range managedFields {
		if e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, nil, fmt.Errorf("managedFields of %s: %w", e.Manager, err)
		}
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
			ours = ours.Union(s)
		} else {
			others = others.Union(s)
		}
	}
	return ours, others, nil
}

// OwnedFieldsJSON is OwnedFields serialised as fieldsV1 JSON; with a
// single entry (the usual case) its string is returned as it is.
func OwnedFieldsJSON(managedFields []metav1.ManagedFieldsEntry, manager string) (string, error) {
	var raw string
	n := 0
	for _, e := range managedFields {
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" && e.FieldsV1 != nil {
			raw = e.FieldsV1.GetRawString()
			n++
		}
	}
	if n <= 1 {
		return raw, nil
	}
	set, err := OwnedFields(managedFields, manager)
	if err != nil {
		return "", err
	}
	b, err := set.ToJSON()
	return string(b), err
}
