package platform_test

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

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
	// The API server's RBAC cache takes the new binding a moment later.
	var listErr error
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, listErr = as.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		return listErr == nil, nil
	}); err != nil {
		t.Errorf("the account may list configmaps in %s: %v", ns, listErr)
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
	// The new binding, too, reaches the RBAC cache a moment later (a run
	// that asked at once was refused: "cannot impersonate-on").
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, listErr = asDeployer.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		return listErr == nil, nil
	}); err != nil {
		t.Errorf("alice, who may impersonate deployer only, acting as deployer: %v", listErr)
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

// TestLeaderReleasesTheLeaseOnlyAfterItsWork: on shutdown a leader's work
// ends first and its Lease goes after, so the next leader never works
// beside it (two leaders could otherwise run one Helm operation). A
// standby waits while the old leader's work drains, and leads at once
// after.
func TestLeaderReleasesTheLeaseOnlyAfterItsWork(t *testing.T) {
	ns := cp.Namespace(t)
	kube := cp.Client()
	opts := func(id string) clusters.ElectionOptions {
		return clusters.ElectionOptions{Namespace: ns, Name: "leader", Identity: id, LeaseDuration: 7 * time.Second}
	}
	aCtx, stopA := context.WithCancel(t.Context())
	defer stopA()
	aWorking, aDrain, aDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		aDone <- clusters.RunElected(aCtx, kube, opts("a"), func(ctx context.Context) error {
			close(aWorking)
			<-ctx.Done()
			<-aDrain // the work still finishing after its context ended
			return nil
		})
	}()
	select {
	case <-aWorking:
	case <-time.After(time.Minute):
		t.Fatal("a never led")
	}
	bCtx, stopB := context.WithCancel(t.Context())
	defer stopB()
	bLeads, bDone := make(chan struct{}), make(chan error, 1)
	go func() {
		bDone <- clusters.RunElected(bCtx, kube, opts("b"), func(ctx context.Context) error {
			close(bLeads)
			<-ctx.Done()
			return nil
		})
	}()
	stopA()
	// While a's work drains, its Lease holds: b must not lead. (Watched
	// for 3 s: beyond the standby's retry period of 1 s with its jitter, 2.2 s, in which b
	// took the released Lease before the fix.)
	select {
	case <-bLeads:
		close(aDrain)
		t.Fatal("b leads while a's work still runs")
	case <-time.After(3 * time.Second):
	}
	close(aDrain)
	if err := <-aDone; err != nil {
		t.Errorf("a: %v", err)
	}
	select {
	case <-bLeads:
	case <-time.After(time.Minute):
		t.Fatal("b did not lead after a released the Lease")
	}
	stopB()
	if err := <-bDone; err != nil {
		t.Errorf("b: %v", err)
	}
	lease, err := kube.CoordinationV1().Leases(ns).Get(context.WithoutCancel(t.Context()), "leader", metav1.GetOptions{})
	if err != nil || (lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "") {
		t.Errorf("the Lease after both stopped: %v, %v; want released", lease.Spec.HolderIdentity, err)
	}
}
