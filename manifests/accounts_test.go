package manifests

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestAccountsFor(t *testing.T) {
	agent := Accounts{Namespace: "driftwatch-system"}
	tenants := Accounts{Default: "tenant", Namespace: "driftwatch-system"}
	for _, tc := range []struct {
		name     string
		accounts Accounts
		spec     BundleSpec
		want     types.NamespacedName
		err      bool
	}{
		{"none: the agent itself", agent, BundleSpec{}, types.NamespacedName{}, false},
		{"own, in the agent's namespace", agent, BundleSpec{ServiceAccountName: "deployer"}, types.NamespacedName{Namespace: "driftwatch-system", Name: "deployer"}, false},
		{"own, in the target namespace", agent, BundleSpec{ServiceAccountName: "deployer", TargetNamespace: "team-a"}, types.NamespacedName{Namespace: "team-a", Name: "deployer"}, false},
		{"the default", tenants, BundleSpec{}, types.NamespacedName{Namespace: "driftwatch-system", Name: "tenant"}, false},
		{"own beats the default", tenants, BundleSpec{ServiceAccountName: "deployer", TargetNamespace: "team-a"}, types.NamespacedName{Namespace: "team-a", Name: "deployer"}, false},
		{"defaultNamespace does not choose", agent, BundleSpec{ServiceAccountName: "deployer", DefaultNamespace: "team-a"}, types.NamespacedName{Namespace: "driftwatch-system", Name: "deployer"}, false},
		// A name with a colon would make another user name to impersonate.
		{"not a ServiceAccount name", agent, BundleSpec{ServiceAccountName: "x:admin"}, types.NamespacedName{}, true},
		{"upper case", agent, BundleSpec{ServiceAccountName: "Deployer"}, types.NamespacedName{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.accounts.For(&tc.spec)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("For = %v, want %v", got, tc.want)
			}
		})
	}
}
