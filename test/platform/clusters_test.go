package platform_test

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// TestProviderImpersonatesServiceAccounts: the cluster provider's
// per-ServiceAccount clients are authorised by the API server as that
// account — allowed what its RBAC grants, denied the rest — and built once.
func TestProviderImpersonatesServiceAccounts(t *testing.T) {
	ctx := t.Context()
	ns := cp.Namespace(t)
	admin, err := clusters.NewClients(cp.Config(cluster.AdminUser))
	if err != nil {
		t.Fatal(err)
	}
	provider := clusters.NewProvider(admin, admin)
	kubectl(t, "create", "serviceaccount", "deployer", "-n", ns)
	kubectl(t, "create", "role", "configmaps", "-n", ns, "--verb=list", "--resource=configmaps")
	kubectl(t, "create", "rolebinding", "deployer", "-n", ns, "--role=configmaps", "--serviceaccount="+ns+":deployer")

	sa := types.NamespacedName{Namespace: ns, Name: "deployer"}
	as, err := provider.Impersonate(sa)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("the account may list configmaps in %s: %v", ns, err)
	}
	_, err = as.Dynamic.Resource(deployments).Namespace(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "system:serviceaccount:"+ns+":deployer") {
		t.Errorf("listing deployments as the account: want 403 naming it, got %v", err)
	}
	if again, _ := provider.Impersonate(sa); again != as {
		t.Error("a second Impersonate of the same account built new clients")
	}
	if other, _ := provider.Impersonate(types.NamespacedName{Namespace: ns, Name: "default"}); other == as {
		t.Error("two accounts share clients")
	}

	// The multi-tenant install grants the agent impersonate on named
	// ServiceAccounts only, not on groups or users: enough, because the
	// provider names no groups (the API server adds an account's own).
	kubectl(t, "create", "role", "impersonate-deployer", "-n", ns, "--verb=impersonate", "--resource=serviceaccounts", "--resource-name=deployer")
	kubectl(t, "create", "rolebinding", "alice-impersonates", "-n", ns, "--role=impersonate-deployer", "--user=alice")
	alice, err := clusters.NewClients(cp.Config("alice"))
	if err != nil {
		t.Fatal(err)
	}
	narrow := clusters.NewProvider(alice, alice)
	asDeployer, err := narrow.Impersonate(sa)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asDeployer.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("alice, who may impersonate deployer only, acting as deployer: %v", err)
	}
	asDefault, err := narrow.Impersonate(types.NamespacedName{Namespace: ns, Name: "default"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = asDefault.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "impersonate") {
		t.Errorf("alice acting as an account she may not impersonate: want 403 on impersonate, got %v", err)
	}
}
