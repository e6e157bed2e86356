package e2e

import (
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

// tenant creates a namespace for a tenant's objects and, in the agent's
// namespace ns, a ServiceAccount "deployer" that may manage ConfigMaps,
// Roles and RoleBindings there and nothing else: the rights a platform
// team gives one team. The namespace goes with the test.
func tenant(t *testing.T, ns string) string {
	t.Helper()
	tn := ns + "-tenant"
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().Namespaces().Delete(t.Context(), tn, metav1.DeleteOptions{})
	})
	applyYAML(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+tn+"}\n")
	deployer(t, ns, tn, configMapRules+`- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
`)
	return tn
}

// rootBinding is a document, indented for a Bundle's resource, that binds
// cluster-admin to the tenant's account cluster-wide.
func rootBinding(ns string) string {
	return fmt.Sprintf(`    apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {name: %[1]s-root}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
    subjects: [{kind: ServiceAccount, name: deployer, namespace: %[1]s}]
`, ns)
}

// failedWith waits until the Bundle reports the object failed with a
// message containing every one of parts, and returns the Bundle.
func failedWith(t *testing.T, ns, bundle, kind, objNS, name string, parts ...string) *manifests.Bundle {
	t.Helper()
	return waitBundle(t, ns, bundle, fmt.Sprintf("%s %s/%s Failed with %q", kind, objNS, name, parts), func(b *manifests.Bundle) bool {
		for _, r := range b.Status.Resources {
			if r.Kind != kind || r.Namespace != objNS || r.Name != name || r.State != manifests.StateFailed {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(r.Message, p) {
					return false
				}
			}
			return true
		}
		return false
	})
}

// TestServiceAccountBundleActsWithItsRights: a Bundle with
// serviceAccountName reads and writes its objects as that ServiceAccount
// (the agent itself is cluster-admin here). What the account may do is
// applied, corrected and pruned; what it may not — a ConfigMap in
// kube-system, a ClusterRoleBinding to cluster-admin — is denied by the
// API server and reported on the Bundle with verb, resource and namespace,
// while the rest of the Bundle proceeds.
func TestServiceAccountBundleActsWithItsRights(t *testing.T) {
	ns, _ := setup(t)
	tn := tenant(t, ns)
	spec := func(extra string) string {
		return fmt.Sprintf(`
serviceAccountName: deployer
defaultNamespace: %s
resources:
- name: app.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: app}
    data: {color: blue}
%s`, tn, extra)
	}
	hostile := fmt.Sprintf(`    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: %[1]s-planted, namespace: kube-system}
    data: {k: v}
    ---
`+rootBinding(ns)+`    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: extra}
    data: {k: v}
`, ns)
	createBundle(t, ns, "tenant", spec(hostile))
	user := fmt.Sprintf(`User "system:serviceaccount:%s:deployer"`, ns)
	failedWith(t, ns, "tenant", "ConfigMap", "kube-system", ns+"-planted", user, `resource "configmaps"`, `namespace "kube-system"`, "forbidden")
	b := failedWith(t, ns, "tenant", "ClusterRoleBinding", "", ns+"-root", user, `resource "clusterrolebindings"`, "forbidden")
	if isTrue(b, manifests.ConditionSynced) {
		t.Errorf("Synced is True with denied objects: %+v", b.Status.Conditions)
	}
	if _, err := cp.Client().CoreV1().ConfigMaps("kube-system").Get(t.Context(), ns+"-planted", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ConfigMap in kube-system: want not found, got %v", err)
	}
	if _, err := cp.Client().RbacV1().ClusterRoleBindings().Get(t.Context(), ns+"-root", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ClusterRoleBinding: want not found, got %v", err)
	}
	for _, name := range []string{"app", "extra"} {
		cm, ok := configMap(t, tn, name)
		if !ok {
			t.Fatalf("ConfigMap %s/%s, which the account may create, was not applied", tn, name)
		}
		if managers := managersOf(cm.ManagedFields); managers != "driftwatch/Apply" {
			t.Errorf("ConfigMap %s managed by %s, want driftwatch/Apply", name, managers)
		}
	}

	// A correction goes through the account too: it may patch in tn.
	kubectl(t, "-n", tn, "patch", "configmap", "app", "--type=merge", "-p", `{"data":{"color":"red"}}`)
	waitFor(t, "the edit reverted", func() (bool, string) {
		cm, _ := configMap(t, tn, "app")
		return cm != nil && cm.Data["color"] == "blue", fmt.Sprint(cm)
	})

	// So is a prune: "extra" leaves the Bundle, with the denied objects.
	updateBundleSpec(t, ns, "tenant", spec(""))
	waitBundle(t, ns, "tenant", "Ready without the denied objects", ready)
	waitFor(t, "the ConfigMap that left the Bundle pruned", func() (bool, string) {
		_, ok := configMap(t, tn, "extra")
		return !ok, "still there"
	})
}

// TestDefaultServiceAccountCannotGrantItselfMore: with
// --default-service-account, the multi-tenant setting, a Bundle that names
// no account acts as the default one, not as the agent: it cannot bind
// cluster-admin to itself, neither cluster-wide nor in a namespace where
// it may write RoleBindings (RBAC refuses to grant what the writer does
// not hold), and the denial is on the Bundle.
func TestDefaultServiceAccountCannotGrantItselfMore(t *testing.T) {
	setupCRD(t)
	ns := cp.Namespace(t)
	tn := tenant(t, ns)
	startAgent(t, ns, "--default-service-account=deployer")
	createBundle(t, ns, "escalate", fmt.Sprintf(`
defaultNamespace: %[2]s
resources:
- name: rbac.yaml
  content: |
    apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata: {name: root}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
    subjects: [{kind: ServiceAccount, name: deployer, namespace: %[1]s}]
    ---
`+rootBinding(ns)+`    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: fine}
`, ns, tn))
	user := fmt.Sprintf(`"system:serviceaccount:%s:deployer"`, ns)
	failedWith(t, ns, "escalate", "RoleBinding", tn, "root", user, "forbidden", "attempting to grant RBAC permissions not currently held")
	failedWith(t, ns, "escalate", "ClusterRoleBinding", "", ns+"-root", user, "forbidden")
	if _, ok := configMap(t, tn, "fine"); !ok {
		t.Error("the ConfigMap the account may create was not applied")
	}
	if _, err := cp.Client().RbacV1().RoleBindings(tn).Get(t.Context(), "root", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the RoleBinding to cluster-admin: want not found, got %v", err)
	}
	if _, err := cp.Client().RbacV1().ClusterRoleBindings().Get(t.Context(), ns+"-root", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ClusterRoleBinding: want not found, got %v", err)
	}
}

// managersOf lists an object's field managers as manager/operation.
func managersOf(mfs []metav1.ManagedFieldsEntry) string {
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.Manager+"/"+string(mf.Operation))
	}
	return strings.Join(out, ",")
}
