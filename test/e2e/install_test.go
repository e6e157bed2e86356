package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	repo "helm.sh/helm/v4/pkg/repo/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// repoPath returns a path in the repository.
func repoPath(parts ...string) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(self), "..", ".."}, parts...)...)
}

// monitoringCRDs stands in for prometheus-operator's CRDs, so that a server
// dry run can take ServiceMonitors and PrometheusRules.
const monitoringCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, plural: prometheusrules}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

// TestInstallManifestsAndChartDryRun: the Kustomize base, its overlays and
// the Helm chart (helm lint; helm template, each variant) are accepted by
// the real API server in a server-side dry run.
func TestInstallManifestsAndChartDryRun(t *testing.T) {
	setupCRD(t)
	crds := filepath.Join(t.TempDir(), "monitoring-crds.yaml")
	if err := os.WriteFile(crds, []byte(monitoringCRDs), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", crds)
	kubectl(t, "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	// A server dry run does not create the namespace the rest lives in.
	kubectl(t, "create", "namespace", "driftwatch-install")
	t.Cleanup(func() {
		_, _ = exec.Command(cp.Bin("kubectl"), "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "delete", "namespace", "driftwatch-install", "--wait=false").CombinedOutput()
	})
	if _, err := cp.Client().CoreV1().Namespaces().Get(t.Context(), "driftwatch-system", metav1.GetOptions{}); err != nil {
		kubectl(t, "create", "namespace", "driftwatch-system")
	}

	for _, dir := range []string{"manifests/deploy", "manifests/overlays/multi-tenant", "manifests/overlays/monitoring", "manifests/overlays/upstream-mode"} {
		out := kubectl(t, "apply", "--dry-run=server", "-k", repoPath(dir))
		if !strings.Contains(out, "deployment.apps/driftwatch") {
			t.Errorf("kubectl apply -k %s --dry-run=server:\n%s", dir, out)
		}
	}

	chart := repoPath("charts", "driftwatch")
	helm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(cp.Bin("helm"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	helm("lint", chart)
	for _, set := range []string{"", "rbac.scope=tenant",
		"upstream.enabled=true,clusterName=edge-1,clusterLabels.env=prod",
		"monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true"} {
		args := []string{"template", "dw", chart, "--namespace", "driftwatch-install"}
		if set != "" {
			args = append(args, "--set", set)
		}
		manifest := filepath.Join(t.TempDir(), "chart.yaml")
		if err := os.WriteFile(manifest, []byte(helm(args...)), 0o644); err != nil {
			t.Fatal(err)
		}
		out := kubectl(t, "apply", "--dry-run=server", "-n", "driftwatch-install", "-f", manifest)
		if !strings.Contains(out, "deployment.apps/") {
			t.Errorf("helm template --set %q | kubectl apply --dry-run=server:\n%s", set, out)
		}
	}
	if out, err := exec.Command(cp.Bin("helm"), "template", "dw", chart, "--set", "upstream.enabled=true").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "clusterName") {
		t.Errorf("helm template with upstream.enabled and no clusterName: %v\n%s", err, out)
	}
}

// TestShippedRBACIsEnough runs the agent as a process with a token of the
// manifests' own ServiceAccount (TokenRequest), under the wide RBAC of the
// base and then the multi-tenant profile. Under both the core drift
// scenario passes — applied, edited and deleted objects repaired, status
// written. Under the multi-tenant one the Bundles live in a tenant's
// namespace and act as its driftwatch-deployer, which that namespace lets
// the agent impersonate: a Helm release installs, a Bundle that would bind
// cluster-admin is refused by the API server, and a namespace that did not
// onboard gives the agent no account to act as. (The agent watches the
// test's namespaces, not every one as the profile's --bundle-namespaces=*
// does: other tests' Bundles live in this cluster.)
func TestShippedRBACIsEnough(t *testing.T) {
	setupCRD(t)
	kubectl(t, "apply", "-k", repoPath("manifests", "deploy"))
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		// The base runs its Deployment too (kwok fakes its pods); the test
		// runs the agent itself, as a process.
		_ = cp.Client().AppsV1().Deployments("driftwatch-system").Delete(ctx, "driftwatch", metav1.DeleteOptions{})
		for _, name := range []string{"driftwatch", "driftwatch-impersonate-deployer"} {
			_ = cp.Client().RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
			_ = cp.Client().RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{})
		}
	})
	for _, variant := range []string{"wide", "multi-tenant"} {
		t.Run(variant, func(t *testing.T) {
			ns := cp.Namespace(t)
			args := []string{}
			home := "driftwatch-system" // where the Bundles live
			if variant == "multi-tenant" {
				kubectl(t, "apply", "-k", repoPath("manifests", "overlays", "multi-tenant"))
				applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: driftwatch-deployer, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: driftwatch-deployer, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: driftwatch-deployer, namespace: %[1]s}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: driftwatch-impersonate-deployer, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: driftwatch-impersonate-deployer}
subjects: [{kind: ServiceAccount, name: driftwatch, namespace: driftwatch-system}]
`, ns))
				home = ns
			}
			other := cp.Namespace(t) // not onboarded
			args = append(args, "--bundle-namespaces", ns+","+other, "--default-service-account=driftwatch-deployer")
			kubeconfig := tokenKubeconfig(t, "driftwatch-system", "driftwatch")
			if variant == "wide" {
				args = nil // the agent itself applies: the base's own setting
			}
			startAgent(t, "driftwatch-system", append([]string{"--kubeconfig", kubeconfig}, args...)...)
			cleanup := func(ns, name string) {
				t.Cleanup(func() {
					_ = dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(context.WithoutCancel(t.Context()), name, metav1.DeleteOptions{})
				})
			}
			name := "rbac-" + variant
			createBundle(t, home, name, webBundle("defaultNamespace: "+ns))
			cleanup(home, name)
			waitBundle(t, home, name, "Ready", ready)
			kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
			kubectl(t, "delete", "-n", ns, "configmap/settings")
			waitFor(t, "the scale and the deletion repaired", func() (bool, string) {
				d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				_, ok := configMap(t, ns, "settings")
				return *d.Spec.Replicas == 2 && ok, fmt.Sprintf("replicas %d, settings present %v", *d.Spec.Replicas, ok)
			})
			// Synced with both corrections counted; not Ready: the Pods of the
			// scale to 5 terminate when kwok gets to them (once a minute
			// after the test began), which says nothing about RBAC.
			waitBundle(t, home, name, "corrections in the status", func(b *manifests.Bundle) bool {
				return isTrue(b, manifests.ConditionSynced) && b.Status.DriftCorrections >= 2
			})
			if variant != "multi-tenant" {
				return
			}
			// A Helm release: its records are Secrets, its capabilities
			// come from discovery; all of it as the tenant's account.
			chart := "chart-" + variant
			createBundle(t, home, chart, specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
				Resources: chartFiles(t, "web"), Helm: &manifests.HelmSpec{Chart: "web"}}))
			cleanup(home, chart)
			waitBundle(t, home, chart, "Ready", ready)
			grab := "grab-" + variant
			createBundle(t, home, grab, `
resources:
- name: crb.yaml
  content: |
    apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {name: `+ns+`-grab}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
    subjects: [{kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}]
`)
			cleanup(home, grab)
			b := waitBundle(t, home, grab, "the ClusterRoleBinding refused", func(b *manifests.Bundle) bool {
				c := condition(b, manifests.ConditionSynced)
				return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "forbidden") &&
					strings.Contains(c.Message, "system:serviceaccount:"+ns+":driftwatch-deployer")
			})
			if _, err := cp.Client().RbacV1().ClusterRoleBindings().Get(t.Context(), ns+"-grab", metav1.GetOptions{}); err == nil {
				t.Errorf("the multi-tenant agent created a ClusterRoleBinding to cluster-admin; status %+v", b.Status)
			}
			createBundle(t, other, "stranger", webBundle("defaultNamespace: "+other))
			cleanup(other, "stranger")
			waitBundle(t, other, "stranger", "the account the agent may not impersonate", func(b *manifests.Bundle) bool {
				c := condition(b, manifests.ConditionSynced)
				return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "impersonate")
			})
			if _, ok := configMap(t, other, "settings"); ok {
				t.Error("a Bundle of a namespace that was not onboarded was applied")
			}
		})
	}
}

// TestShippedDeploymentStarts runs the agent as the shipped Deployment runs
// it: the manifest's arguments and environment (the downward API's values
// filled in as the kubelet would), its emptyDir volume at a directory of
// the test's (the kubelet's mount), a HOME and TMPDIR where nothing can be
// written (/dev/null: not even root makes a directory under it), and a
// token of the manifests' own ServiceAccount under the shipped RBAC. It
// starts, and a Helm chart from a repository installs with the chart kept
// in the volume.
func TestShippedDeploymentStarts(t *testing.T) {
	setupCRD(t)
	kubectl(t, "apply", "-k", repoPath("manifests", "deploy"))
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		_ = cp.Client().AppsV1().Deployments("driftwatch-system").Delete(ctx, "driftwatch", metav1.DeleteOptions{})
		_ = cp.Client().RbacV1().ClusterRoleBindings().Delete(ctx, "driftwatch", metav1.DeleteOptions{})
		_ = cp.Client().RbacV1().ClusterRoles().Delete(ctx, "driftwatch", metav1.DeleteOptions{})
	})
	raw, err := os.ReadFile(repoPath("manifests", "deploy", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	if err := yaml.Unmarshal(raw, &dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Fatal("the shipped container no longer has a read-only root: this test would prove nothing")
	}
	mounts := map[string]string{} // mount path → the test's directory
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				mounts[m.MountPath] = t.TempDir()
			}
		}
	}
	env := []string{"HOME=/dev/null", "TMPDIR=/dev/null", "PATH=/usr/bin:/bin"}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+dep.Namespace)
		case e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil:
			env = append(env, e.Name+"="+fmt.Sprint(c.Resources.Limits.Memory().Value()))
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	var args []string
	for _, a := range c.Args[1:] { // after "agent"
		if strings.HasPrefix(a, "--metrics-bind-address") || strings.HasPrefix(a, "--health-probe-bind-address") {
			continue // the test's free ports instead of :8080 and :8081
		}
		a = strings.ReplaceAll(a, "$(POD_NAMESPACE)", dep.Namespace)
		for path, dir := range mounts {
			a = strings.ReplaceAll(a, path, dir)
		}
		args = append(args, a)
	}
	a := startAgentEnv(t, env, dep.Namespace, append(args, "--kubeconfig", tokenKubeconfig(t, dep.Namespace, "driftwatch"))...)
	waitFor(t, "the agent to lead and be ready", func() (bool, string) { return a.ready(t), "not ready" })

	dir := t.TempDir()
	packageChart(t, "web", "1.0.0", dir)
	repoSrv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer repoSrv.Close()
	index, err := repo.IndexDirectory(dir, repoSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := cp.Namespace(t)
	createBundle(t, dep.Namespace, "installed", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL}}))
	t.Cleanup(func() {
		_ = dyn.Resource(manifests.BundleGVR).Namespace(dep.Namespace).Delete(context.WithoutCancel(t.Context()), "installed", metav1.DeleteOptions{})
	})
	waitBundle(t, dep.Namespace, "installed", "Ready", ready)
	var kept []string
	for _, d := range mounts {
		found, _ := filepath.Glob(filepath.Join(d, "*", "*.tgz"))
		kept = append(kept, found...)
	}
	if len(kept) != 1 {
		t.Errorf("charts kept in the Deployment's volume: %v, want the one installed", kept)
	}
}
