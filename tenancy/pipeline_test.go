package tenancy

import (
	"context"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

// TestACustomizationCannotLeaveTheRestriction: the render pipeline admits
// the effective spec, so a target customization that moves a Bundle to
// another tenant's namespace is refused like the Bundle itself would be,
// and nothing is rendered.
func TestACustomizationCannotLeaveTheRestriction(t *testing.T) {
	p := &Policy{AgentNamespace: "driftwatch-system", DefaultServiceAccount: "deployer",
		Restrictions: restrictions{restriction("team-a", "own", manifests.RestrictionSpec{AllowedTargetNamespaces: []string{"team-a"}})}}
	b := &manifests.Bundle{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "app"}, Spec: manifests.BundleSpec{
		TargetNamespace: "team-a",
		Resources:       []manifests.Resource{{Name: "cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"}},
		TargetCustomizations: []manifests.TargetCustomization{{Name: "prod", TargetNamespace: "team-b",
			ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}},
	}}
	pipeline := manifests.Pipeline{Admit: p}
	if r, err := pipeline.Render(context.Background(), b, manifests.Cluster{Labels: map[string]string{"env": "dev"}}); err != nil || r.Access.ServiceAccount.Name != "deployer" {
		t.Fatalf("the Bundle as written: %v, %v", r, err)
	}
	r, err := pipeline.Render(context.Background(), b, manifests.Cluster{Labels: map[string]string{"env": "prod"}})
	var refused *manifests.Refused
	if !errors.As(err, &refused) || !strings.Contains(refused.Message, `"team-b"`) || r != nil {
		t.Fatalf("customized into team-b: rendered %v, err %v; want a refusal naming team-b", r, err)
	}
}
