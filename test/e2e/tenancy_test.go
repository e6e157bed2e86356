package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

// applyYAML applies a multi-document YAML as the admin.
func applyYAML(t *testing.T, doc string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", path)
}

// tokenKubeconfig is a kubeconfig file with a token of ServiceAccount
// ns/name (TokenRequest).
func tokenKubeconfig(t *testing.T, ns, name string) string {
	t.Helper()
	token := strings.TrimSpace(kubectl(t, "create", "token", name, "-n", ns))
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(kubeconfigYAML(cp.Host, cp.CACert(), "token: "+token)), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// configMapRules lets a Role manage ConfigMaps.
const configMapRules = `- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
`

// deployer creates a ServiceAccount "deployer" in saNamespace and, in
// namespace ns, a Role with rules bound to it: what a platform team gives
// one team.
func deployer(t *testing.T, saNamespace, ns, rules string) {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: deployer, namespace: %[2]s}
rules:
%[3]s---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployer, namespace: %[2]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: deployer}
subjects: [{kind: ServiceAccount, name: deployer, namespace: %[1]s}]
`, saNamespace, ns, rules))
}

// deployerIn creates, in namespace ns, a ServiceAccount "deployer" that
// may manage ConfigMaps there and nothing else.
func deployerIn(t *testing.T, ns string) { deployer(t, ns, ns, configMapRules) }

// agentAsServiceAccount runs the agent as ServiceAccount "driftwatch" of
// ns, bound to cluster-admin as the shipped wide RBAC binds it, with a
// token of its own (TokenRequest): the agent's identity is then an account
// a Bundle could name.
func agentAsServiceAccount(t *testing.T, ns string, args ...string) *agent {
	t.Helper()
	return agentBoundTo(t, ns, "cluster-admin", args...)
}

// agentBoundTo runs the agent as ServiceAccount "driftwatch" of ns, bound
// to clusterRole, with a token of its own.
func agentBoundTo(t *testing.T, ns, clusterRole string, args ...string) *agent {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: driftwatch, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: %[1]s-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %[2]s}
subjects: [{kind: ServiceAccount, name: driftwatch, namespace: %[1]s}]
`, ns, clusterRole))
	t.Cleanup(func() {
		_ = cp.Client().RbacV1().ClusterRoleBindings().Delete(context.WithoutCancel(t.Context()), ns+"-agent", metav1.DeleteOptions{})
	})
	return startAgent(t, ns, append([]string{"--kubeconfig", tokenKubeconfig(t, ns, "driftwatch")}, args...)...)
}

// refused waits until the Bundle is refused whole: Synced False, reason
// Refused, with a message containing every one of parts.
func refused(t *testing.T, ns, name string, parts ...string) *manifests.Bundle {
	t.Helper()
	return waitBundle(t, ns, name, fmt.Sprintf("Refused with %q", parts), func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Refused" {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(c.Message, p) {
				return false
			}
		}
		return true
	})
}

func configMapDoc(name, namespace string) string {
	ns := ""
	if namespace != "" {
		ns = ", namespace: " + namespace
	}
	return fmt.Sprintf("    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: %s%s}\n    data: {k: v}\n", name, ns)
}

func resourcesOf(docs ...string) string {
	return "resources:\n- name: objects.yaml\n  content: |\n" + strings.Join(docs, "    ---\n")
}

// TestTenantsAreIsolated: Bundles in tenants' namespaces act only as an
// account of their own namespace, never as the agent nor as another
// tenant, within what their namespace's BundleRestrictions allow; nothing
// a Bundle declares may write what the agent relies on. The agent runs as
// a ServiceAccount bound to cluster-admin, as the shipped wide RBAC runs
// it, with --default-service-account (the multi-tenant setting).
func TestTenantsAreIsolated(t *testing.T) {
	setupCRD(t)
	ns := cp.Namespace(t)
	teamA, teamB := cp.Namespace(t), cp.Namespace(t)
	for _, n := range []string{ns, teamA, teamB} {
		deployerIn(t, n)
	}
	agentAsServiceAccount(t, ns, "--bundle-namespaces", teamA+","+teamB, "--default-service-account=deployer")

	// The agent's own account, named by a Bundle of its own namespace:
	// refused by name, and the cluster-admin binding never written.
	createBundle(t, ns, "self", "serviceAccountName: driftwatch\n"+resourcesOf(fmt.Sprintf(`    apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {name: %s-mallory}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
    subjects: [{kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}]
`, ns)))
	refused(t, ns, "self", "spec.serviceAccountName", "the agent's own account")

	// Another tenant's namespace as the target: the account is still
	// team A's, which may not write there.
	createBundle(t, teamA, "cross", fmt.Sprintf("serviceAccountName: deployer\ntargetNamespace: %s\n", teamB)+resourcesOf(configMapDoc("planted", "")))
	failedWith(t, teamA, "cross", "ConfigMap", teamB, "planted",
		fmt.Sprintf(`User "system:serviceaccount:%s:deployer"`, teamA), `namespace "`+teamB+`"`, "forbidden")

	// No account named: the default one, of the Bundle's namespace, never
	// the agent; it may write its namespace and nothing else. An object
	// in the agent's namespace is refused before any request.
	createBundle(t, teamA, "own", "defaultNamespace: "+teamA+"\n"+resourcesOf(configMapDoc("app", ""),
		configMapDoc(teamA+"-planted", "kube-system"), configMapDoc("sneaky", ns)))
	failedWith(t, teamA, "own", "ConfigMap", "kube-system", teamA+"-planted", fmt.Sprintf(`"system:serviceaccount:%s:deployer"`, teamA), "forbidden")
	failedWith(t, teamA, "own", "ConfigMap", ns, "sneaky", "the agent's own")
	if cm, ok := configMap(t, teamA, "app"); !ok || managersOf(cm.ManagedFields) != "driftwatch/Apply" {
		t.Errorf("ConfigMap %s/app, which team A's account may write: present %v, managers %v", teamA, ok, cm)
	}
	createBundle(t, teamA, "agentns", "targetNamespace: "+ns+"\n"+resourcesOf(configMapDoc("x", "")))
	refused(t, teamA, "agentns", "the agent's namespace")

	// In the agent's namespace, an account that may write ConfigMaps
	// there still may not declare the cluster ConfigMap or an ApplySet
	// parent: those would re-render, or rewrite the inventory of, every
	// Bundle.
	createBundle(t, ns, "reserved", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("driftwatch-cluster", ""),
		configMapDoc("bundle-"+teamA+"-own", ""), configMapDoc("fine", "")))
	failedWith(t, ns, "reserved", "ConfigMap", ns, "driftwatch-cluster", "cluster's labels")
	failedWith(t, ns, "reserved", "ConfigMap", ns, "bundle-"+teamA+"-own", "ApplySet parents")
	if _, ok := configMap(t, ns, "fine"); !ok {
		t.Error("the Bundle's other ConfigMap was not applied")
	}
	if cm, ok := configMap(t, ns, "driftwatch-cluster"); ok {
		t.Errorf("the cluster ConfigMap was written by a Bundle: %v", cm.Data)
	}
	if cm, ok := configMap(t, ns, "bundle-"+teamA+"-own"); ok && cm.Data["k"] == "v" {
		t.Errorf("another Bundle's ApplySet parent was overwritten: %v", cm.Data)
	}

	// The namespace's owner restricts team A: its own namespace only, its
	// deployer only. The Bundles already there are synced again at once.
	applyYAML(t, fmt.Sprintf(`apiVersion: driftwatch.io/v1alpha1
kind: BundleRestriction
metadata: {name: only-own, namespace: %[1]s}
spec:
  allowedTargetNamespaces: [%[1]s]
  allowedServiceAccounts: [deployer]
`, teamA))
	refused(t, teamA, "cross", "BundleRestriction "+teamA+"/only-own: allowedTargetNamespaces", teamB)
	refused(t, teamA, "own", "allowedTargetNamespaces", "must set a targetNamespace")
	createBundle(t, teamA, "admin", fmt.Sprintf("serviceAccountName: default\ntargetNamespace: %s\n", teamA)+resourcesOf(configMapDoc("y", "")))
	refused(t, teamA, "admin", "allowedServiceAccounts", `"default"`)
	createBundle(t, teamA, "allowed", fmt.Sprintf("targetNamespace: %s\n", teamA)+resourcesOf(configMapDoc("allowed", "")))
	waitBundle(t, teamA, "allowed", "Ready within the restriction", ready)

	if _, err := cp.Client().RbacV1().ClusterRoleBindings().Get(t.Context(), ns+"-mallory", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ClusterRoleBinding to cluster-admin: want not found, got %v", err)
	}
	if _, err := cp.Client().CoreV1().ConfigMaps(teamB).Get(t.Context(), "planted", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("team A's ConfigMap in team B's namespace: want not found, got %v", err)
	}
}

// chartWith is a chart "c" among a Bundle's resources whose one template
// is tmpl.
func chartWith(tmpl string) []manifests.Resource {
	return []manifests.Resource{
		{Name: "c/Chart.yaml", Content: "apiVersion: v2\nname: c\nversion: 0.1.0\n"},
		{Name: "c/templates/objects.yaml", Content: tmpl},
	}
}

// TestHelmBundlesStayInTheirNamespaceAndTakeNothingOfOthers: a chart's
// objects are prepared as a raw Bundle's are — forced into targetNamespace,
// cluster-scoped ones refused there — and neither takeOwnership nor adopt
// takes an object another Bundle owns; the victim keeps it, unchanged.
func TestHelmBundlesStayInTheirNamespaceAndTakeNothingOfOthers(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	tn := cp.Namespace(t)

	createBundle(t, ns, "escape", specYAML(t, manifests.BundleSpec{TargetNamespace: tn, Resources: chartWith(
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + ns + "-escape, namespace: kube-system}\ndata: {k: v}\n"),
		Helm: &manifests.HelmSpec{Chart: "c"}}))
	waitBundle(t, ns, "escape", "Ready", ready)
	if _, ok := configMap(t, tn, ns+"-escape"); !ok {
		t.Errorf("the chart's ConfigMap is not in targetNamespace %s", tn)
	}
	if _, err := cp.Client().CoreV1().ConfigMaps("kube-system").Get(t.Context(), ns+"-escape", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the chart's ConfigMap in kube-system: want not found, got %v", err)
	}

	createBundle(t, ns, "clusterwide", specYAML(t, manifests.BundleSpec{TargetNamespace: tn, Resources: chartWith(
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: " + ns + "-wide}\nrules: []\n"),
		Helm: &manifests.HelmSpec{Chart: "c"}}))
	waitBundle(t, ns, "clusterwide", "the release refused", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "cluster-scoped") && strings.Contains(c.Message, "targetNamespace")
	})
	if _, err := cp.Client().RbacV1().ClusterRoles().Get(t.Context(), ns+"-wide", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the chart's ClusterRole: want not found, got %v", err)
	}

	createBundle(t, ns, "victim", "defaultNamespace: "+ns+"\n"+resourcesOf(configMapDoc("shared", "")))
	waitBundle(t, ns, "victim", "Ready", ready)
	createBundle(t, ns, "thief", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Adopt: true, Resources: chartWith(
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: stolen}\n"),
		Helm: &manifests.HelmSpec{Chart: "c", TakeOwnership: true}}))
	waitBundle(t, ns, "thief", "the release refused", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "already owned by bundle "+ns+"/victim")
	})
	cm, ok := configMap(t, ns, "shared")
	if !ok {
		t.Fatal("the victim's ConfigMap is gone")
	}
	if cm.Data["k"] != "v" || cm.Annotations["driftwatch.io/bundle"] != ns+"/victim" {
		t.Fatalf("the victim's ConfigMap: data %v, owner %q", cm.Data, cm.Annotations["driftwatch.io/bundle"])
	}
	if b := getBundle(t, ns, "victim"); !ready(b) {
		t.Errorf("the victim is not Ready: %+v", b.Status.Conditions)
	}
}

// TestValuesFromAnotherNamespaceIsReadAsTheAccount: a chart's valuesFrom
// may name a Secret of any namespace; it is read as the Bundle's account,
// so a tenant cannot have the agent read another namespace's Secret into
// its values.
func TestValuesFromAnotherNamespaceIsReadAsTheAccount(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	other := cp.Namespace(t)
	deployerIn(t, ns)
	applyYAML(t, fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: %s}\nstringData: {values.yaml: \"password: hunter2\"}\n", other))
	createBundle(t, ns, "peek", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, ServiceAccountName: "deployer",
		Resources: chartFiles(t, "web"), Helm: &manifests.HelmSpec{Chart: "web",
			ValuesFrom: []manifests.ValuesReference{{SecretKeyRef: &manifests.KeySelector{Name: "db", Namespace: other}}}}}))
	waitBundle(t, ns, "peek", "the Secret read refused", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, `cannot get resource "secrets"`) &&
			strings.Contains(c.Message, "system:serviceaccount:"+ns+":deployer") && strings.Contains(c.Message, other)
	})
}
