package ownership

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestApplySetIDMatchesKEP3659(t *testing.T) {
	// kubectl's own example: the ID of parent Secret "mysecret" in "default".
	// kubectl computes base64url(sha256("mysecret.default.Secret.")).
	got := applySetID("mysecret", "default", "Secret", "")
	want := "applyset-" // prefix and suffix are the stable part of the format
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "-v1") || len(got) != len("applyset--v1")+43 {
		t.Fatalf("ID %q does not have the KEP-3659 shape", got)
	}
	if got == applySetID("mysecret", "other", "Secret", "") {
		t.Fatal("different parents must have different IDs")
	}
}

func TestLabelValuesAreValid(t *testing.T) {
	long := strings.Repeat("x", 200)
	for _, b := range []Bundle{{Namespace: "web", Name: "api"}, {Namespace: "team-a", Name: long}} {
		s := NewSet(b, "driftwatch-system")
		obj := &unstructured.Unstructured{}
		s.Stamp(obj)
		for k, v := range obj.GetLabels() {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("bundle %s: label %s=%q invalid: %v", b, k, v, errs)
			}
		}
		if errs := validation.IsDNS1123Subdomain(s.ParentName); len(errs) > 0 {
			t.Errorf("bundle %s: parent name %q invalid: %v", b, s.ParentName, errs)
		}
		if obj.GetAnnotations()[BundleAnnotation] != b.String() {
			t.Errorf("annotation %q, want %q", obj.GetAnnotations()[BundleAnnotation], b.String())
		}
	}
}

func TestAdmit(t *testing.T) {
	mine := NewSet(Bundle{Namespace: "a", Name: "one"}, "driftwatch-system")
	other := NewSet(Bundle{Namespace: "a", Name: "two"}, "driftwatch-system")
	owned := func(s Set) metav1.Object {
		u := &unstructured.Unstructured{}
		s.Stamp(u)
		return u
	}
	unowned := &unstructured.Unstructured{}
	unowned.SetLabels(map[string]string{"app": "x"})

	tests := []struct {
		name     string
		existing metav1.Object
		adopt    bool
		want     error
		owner    string
	}{
		{"absent", nil, false, nil, ""},
		{"ours", owned(mine), false, nil, ""},
		{"another bundle's, even with adopt", owned(other), true, &ErrOwnedByOther{}, "a/two"},
		{"nobody's without adopt", unowned, false, ErrNotAdopted, ""},
		{"nobody's with adopt", unowned, true, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mine.Admit(tt.existing, tt.adopt)
			var other *ErrOwnedByOther
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("want admitted, got %v", err)
			case tt.owner != "":
				if !errors.As(err, &other) || other.Owner != tt.owner {
					t.Fatalf("want owned by %s, got %v", tt.owner, err)
				}
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("want %v, got %v", tt.want, err)
			}
		})
	}
}

func TestParentListsKindsAndNamespaces(t *testing.T) {
	s := NewSet(Bundle{Namespace: "a", Name: "one"}, "driftwatch-system")
	p := s.Parent([]schema.GroupKind{{Group: "apps", Kind: "Deployment"}, {Kind: "ConfigMap"}, {Group: "apps", Kind: "Deployment"}},
		[]string{"web", "", "driftwatch-system", "api", "web"})
	ann := p.GetAnnotations()
	if got := ann[ContainsGroupKindsAnnotation]; got != "ConfigMap,Deployment.apps" {
		t.Errorf("contains-group-kinds = %q", got)
	}
	if got := ann[AdditionalNamespacesAnnotation]; got != "api,web" {
		t.Errorf("additional-namespaces = %q", got)
	}
	if p.GetLabels()[IDLabel] != s.ID {
		t.Errorf("parent id label %q, want %q", p.GetLabels()[IDLabel], s.ID)
	}
	if got := ParseGroupKinds(ann[ContainsGroupKindsAnnotation]); len(got) != 2 || got[1] != (schema.GroupKind{Group: "apps", Kind: "Deployment"}) {
		t.Errorf("ParseGroupKinds = %v", got)
	}
}
