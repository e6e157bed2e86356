package tenancy

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"

	"github.com/driftwatch/driftwatch/manifests"
)

// restrictions is a RestrictionLister over a fixed list.
type restrictions []manifests.BundleRestriction

func (rs restrictions) Restrictions(ns string) ([]manifests.BundleRestriction, error) {
	var out []manifests.BundleRestriction
	for _, r := range rs {
		if r.Namespace == ns {
			out = append(out, r)
		}
	}
	return out, nil
}

type failing struct{}

func (failing) Restrictions(string) ([]manifests.BundleRestriction, error) {
	return nil, errors.New("cache not synced")
}

func restriction(ns, name string, spec manifests.RestrictionSpec) manifests.BundleRestriction {
	return manifests.BundleRestriction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func TestAdmit(t *testing.T) {
	const agentNS = "driftwatch-system"
	agentUser := serviceaccount.MakeUsername(agentNS, "driftwatch")
	open := &Policy{AgentNamespace: agentNS, AgentUser: agentUser}
	locked := &Policy{AgentNamespace: agentNS, AgentUser: agentUser, DefaultServiceAccount: "tenant"}
	teamA := types.NamespacedName{Namespace: "team-a", Name: "app"}
	admin := types.NamespacedName{Namespace: agentNS, Name: "app"}
	sa := func(ns, name string) manifests.Access {
		return manifests.Access{ServiceAccount: types.NamespacedName{Namespace: ns, Name: name}}
	}
	restricted := func(rs ...manifests.BundleRestriction) *Policy {
		p := *locked
		p.Restrictions = restrictions(rs)
		return &p
	}
	onlyTeamA := restriction("team-a", "default", manifests.RestrictionSpec{
		AllowedTargetNamespaces: []string{"team-a", "team-a-*"}, AllowedServiceAccounts: []string{"deployer"},
		DefaultServiceAccount: "deployer", AllowedRepoPatterns: []string{`https://charts\.example\.com/.*`}})
	helm := func(repo, chart string, insecure bool) *manifests.HelmSpec {
		return &manifests.HelmSpec{Repo: repo, Chart: chart, Insecure: insecure, CredentialsSecret: "creds"}
	}
	for _, tc := range []struct {
		name   string
		policy *Policy
		bundle types.NamespacedName
		spec   manifests.BundleSpec
		want   manifests.Access
		rule   string // the refusal's rule contains it; "" admits
	}{
		{"no account: the agent", open, admin, manifests.BundleSpec{}, manifests.Access{}, ""},
		{"own account, in the Bundle's namespace", open, teamA, manifests.BundleSpec{ServiceAccountName: "deployer"}, sa("team-a", "deployer"), ""},
		// The account never follows targetNamespace into another tenant's namespace.
		{"targetNamespace does not choose the account's namespace", open, teamA,
			manifests.BundleSpec{ServiceAccountName: "deployer", TargetNamespace: "team-b"}, sa("team-a", "deployer"), ""},
		{"the default, in the Bundle's namespace", locked, teamA, manifests.BundleSpec{}, sa("team-a", "tenant"), ""},
		{"the default in the agent's namespace too", locked, admin, manifests.BundleSpec{}, sa(agentNS, "tenant"), ""},
		{"the agent's own account by name", locked, admin, manifests.BundleSpec{ServiceAccountName: "driftwatch"}, manifests.Access{}, "spec.serviceAccountName"},
		{"another namespace's driftwatch is not the agent", locked, teamA, manifests.BundleSpec{ServiceAccountName: "driftwatch"}, sa("team-a", "driftwatch"), ""},
		{"a user name through a colon", open, teamA, manifests.BundleSpec{ServiceAccountName: "x:admin"}, manifests.Access{}, "spec.serviceAccountName"},
		{"upper case", open, teamA, manifests.BundleSpec{ServiceAccountName: "Deployer"}, manifests.Access{}, "spec.serviceAccountName"},
		{"another namespace targets the agent's", open, teamA, manifests.BundleSpec{TargetNamespace: agentNS}, manifests.Access{}, "the agent's namespace"},
		{"the agent's namespace targets itself", open, admin, manifests.BundleSpec{TargetNamespace: agentNS}, manifests.Access{}, ""},

		{"restriction: its default", restricted(onlyTeamA), teamA, manifests.BundleSpec{TargetNamespace: "team-a"}, sa("team-a", "deployer"), ""},
		{"restriction: a glob target", restricted(onlyTeamA), teamA, manifests.BundleSpec{TargetNamespace: "team-a-web"}, sa("team-a", "deployer"), ""},
		{"restriction: another tenant's namespace", restricted(onlyTeamA), teamA, manifests.BundleSpec{TargetNamespace: "team-b"}, manifests.Access{}, "team-a/default: allowedTargetNamespaces"},
		{"restriction: no targetNamespace", restricted(onlyTeamA), teamA, manifests.BundleSpec{DefaultNamespace: "team-a"}, manifests.Access{}, "allowedTargetNamespaces"},
		{"restriction: an account not allowed", restricted(onlyTeamA), teamA, manifests.BundleSpec{TargetNamespace: "team-a", ServiceAccountName: "admin"}, manifests.Access{}, "allowedServiceAccounts"},
		{"restriction: no account at all", restricted(restriction("team-a", "r", manifests.RestrictionSpec{AllowedServiceAccounts: []string{"deployer"}})),
			teamA, manifests.BundleSpec{}, sa("team-a", "tenant"), "allowedServiceAccounts"},
		{"restriction: a repository it allows", restricted(onlyTeamA), teamA,
			manifests.BundleSpec{TargetNamespace: "team-a", Helm: &manifests.HelmSpec{Repo: "https://charts.example.com/stable", Chart: "web"}}, sa("team-a", "deployer"), ""},
		{"restriction: a repository it does not", restricted(onlyTeamA), teamA,
			manifests.BundleSpec{TargetNamespace: "team-a", Helm: &manifests.HelmSpec{Repo: "https://charts.example.com.evil.io/", Chart: "web"}}, manifests.Access{}, "allowedRepoPatterns"},
		{"restriction: an OCI chart it does not", restricted(onlyTeamA), teamA,
			manifests.BundleSpec{TargetNamespace: "team-a", Helm: &manifests.HelmSpec{Chart: "oci://evil.io/web"}}, manifests.Access{}, "allowedRepoPatterns"},
		{"restrictions that disagree on the default", restricted(onlyTeamA, restriction("team-a", "other", manifests.RestrictionSpec{DefaultServiceAccount: "ops"})),
			teamA, manifests.BundleSpec{TargetNamespace: "team-a"}, manifests.Access{}, "defaultServiceAccount"},
		{"every restriction applies", restricted(onlyTeamA, restriction("team-a", "zz", manifests.RestrictionSpec{AllowedTargetNamespaces: []string{"team-a-*"}})),
			teamA, manifests.BundleSpec{TargetNamespace: "team-a"}, manifests.Access{}, "team-a/zz: allowedTargetNamespaces"},
		{"another namespace's restriction does not", restricted(onlyTeamA), types.NamespacedName{Namespace: "team-b", Name: "x"},
			manifests.BundleSpec{TargetNamespace: "team-a"}, sa("team-b", "tenant"), ""},
		{"restrictions that cannot be read", &Policy{AgentNamespace: agentNS, Restrictions: failing{}}, teamA, manifests.BundleSpec{}, manifests.Access{}, "BundleRestrictions of namespace team-a"},

		{"credentials over TLS", open, teamA, manifests.BundleSpec{Helm: helm("https://charts.example.com", "web", false)}, manifests.Access{}, ""},
		{"credentials over plain HTTP", open, teamA, manifests.BundleSpec{Helm: helm("http://charts.example.com", "web", false)}, manifests.Access{}, "credentialsSecret"},
		{"credentials to an insecure registry", open, teamA, manifests.BundleSpec{Helm: helm("", "oci://registry.example.com/web", true)}, manifests.Access{}, "credentialsSecret"},
		{"plain HTTP without credentials", open, teamA, manifests.BundleSpec{Helm: &manifests.HelmSpec{Repo: "http://charts.example.com", Chart: "web"}}, manifests.Access{}, ""},
		{"plain HTTP the restriction allows", restricted(restriction("team-a", "r", manifests.RestrictionSpec{AllowInsecureRepositories: true})), teamA,
			manifests.BundleSpec{Helm: helm("http://charts.example.com", "web", false)}, manifests.Access{ServiceAccount: types.NamespacedName{Namespace: "team-a", Name: "tenant"}, AllowInsecure: true}, ""},
		{"invalid pattern", restricted(restriction("team-a", "r", manifests.RestrictionSpec{AllowedTargetNamespaces: []string{"["}})), teamA,
			manifests.BundleSpec{TargetNamespace: "x"}, manifests.Access{}, "allowedTargetNamespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.policy.Admit(tc.bundle, &tc.spec)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got != tc.want {
					t.Errorf("access %+v, want %+v", got, tc.want)
				}
				return
			}
			var refused *manifests.Refused
			if !errors.As(err, &refused) {
				t.Fatalf("err = %v (access %+v), want a refusal by %q", err, got, tc.rule)
			}
			if !strings.Contains(refused.Rule, tc.rule) {
				t.Errorf("refused by %q (%s), want a rule containing %q", refused.Rule, refused.Message, tc.rule)
			}
		})
	}
}
