package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/driftwatch/driftwatch/guard"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// someone is a user who may do anything (system:masters) but is neither
// the agent nor a Bundle's account: what a guard must stop.
const someone = "alice"

// kubectlAs runs kubectl as user (impersonated by the admin, in
// system:masters unless groups say otherwise) with stdin, and returns its
// output and error without failing the test: denials are what is tested.
func kubectlAs(t *testing.T, user, stdin string, args ...string) (string, error) {
	t.Helper()
	all := append([]string{"--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--as", user, "--as-group", "system:masters"}, args...)
	cmd := exec.Command(cp.Bin("kubectl"), all...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// clientAs is a client impersonating user in system:masters.
func clientAs(t *testing.T, user string) kubernetes.Interface {
	t.Helper()
	cfg := cp.Config(cluster.AdminUser)
	cfg.Impersonate.UserName, cfg.Impersonate.Groups = user, []string{"system:masters"}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// guarded waits until the Bundle's Guarded condition has reason.
func guarded(t *testing.T, ns, name, reason string) *manifests.Bundle {
	t.Helper()
	return waitBundle(t, ns, name, "Guarded "+reason, func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionGuarded)
		return c != nil && c.Reason == reason
	})
}

// inEffect waits until the API server enforces the Bundle's policy: it
// loads policies asynchronously, a moment after they are written. A
// server-side dry run of an edit goes through admission without changing
// anything; warn says the policy warns instead of denying.
func inEffect(t *testing.T, ns string, warn bool) {
	t.Helper()
	waitFor(t, "the admission policy in effect", func() (bool, string) {
		// The ownership label: every Bundle owns it on every object.
		out, err := kubectlAs(t, someone, "", "patch", "--dry-run=server", "-n", ns, "configmap/settings", "-p", `{"metadata":{"labels":{"driftwatch.io/bundle":"dry-run"}}}`)
		if warn {
			return err == nil && strings.Contains(out, "Warning:"), out
		}
		return err != nil && strings.Contains(out, "owned by Bundle"), out
	})
}

// restored waits until ConfigMap settings of ns holds want at key again.
func restored(t *testing.T, what, ns, key, want string) {
	t.Helper()
	waitFor(t, what, func() (bool, string) {
		cm, _ := configMap(t, ns, "settings")
		return cm != nil && cm.Data[key] == want, fmt.Sprint(cm)
	})
}

// denied checks that a request failed with a message naming the Bundle,
// each of parts and the user.
func denied(t *testing.T, what, out string, err error, bundle string, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s was let through:\n%s", what, out)
		return
	}
	for _, p := range append([]string{"owned by Bundle " + bundle, "(user " + someone + ")"}, parts...) {
		if !strings.Contains(out, p) {
			t.Errorf("%s: the denial does not say %q:\n%s", what, p, out)
		}
	}
}

func TestPreventModeDeniesEditsOfOwnedFields(t *testing.T) {
	ns, agent := setup(t)
	spec := webBundle(`defaultNamespace: ` + ns + `
drift:
  mode: Prevent
  preventDeletion: true
  ignore:
  - kind: ConfigMap
    name: settings
    fieldPaths: [.data.note]
`)
	spec = strings.Replace(spec, "data: {mode: production}", "data: {mode: production, note: first}", 1)
	createBundle(t, ns, "web", spec)
	waitBundle(t, ns, "web", "Ready", ready)
	guarded(t, ns, "web", "Preventing")
	inEffect(t, ns, false)
	bundle := ns + "/web"
	ctx := t.Context()
	alice := clientAs(t, someone)

	t.Run("denied", func(t *testing.T) {
		out, err := kubectlAs(t, someone, "", "patch", "-n", ns, "deployment/web", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}`)
		denied(t, "a patch of the owned image", out, err, bundle, ".spec.template")
		out, err = kubectlAs(t, someone, "", "label", "-n", ns, "deployment/web", "tier-")
		denied(t, "removing an owned label", out, err, bundle, ".metadata.labels")
		out, err = kubectlAs(t, someone, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"mode":"debug"}}`,
			"apply", "--server-side", "--force-conflicts", "--field-manager=intruder", "-n", ns, "-f", "-")
		denied(t, "a forced server-side apply", out, err, bundle, ".data.mode")
		out, err = kubectlAs(t, someone, "", "patch", "-n", ns, "configmap/settings", "--type=merge", "-p", `{"metadata":{"managedFields":[{}]}}`)
		denied(t, "stripping managedFields", out, err, bundle)
		out, err = kubectlAs(t, someone, "", "scale", "-n", ns, "deployment/web", "--replicas=5")
		denied(t, "kubectl scale", out, err, bundle, ".spec.replicas", "it holds 2")
		out, err = kubectlAs(t, someone, "", "delete", "-n", ns, "configmap/settings")
		denied(t, "a delete", out, err, bundle, "protected from deletion")
		d, err := alice.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Replicas = ptr(int32(7))
		_, err = alice.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: "driftwatch"})
		if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("an update naming the field manager driftwatch was let through: %v", err)
		} else if !strings.Contains(err.Error(), "owned by Bundle "+bundle) {
			t.Errorf("the update's denial does not name the Bundle: %v", err)
		}
		waitBundle(t, ns, "web", "no drift: nothing got through", func(b *manifests.Bundle) bool {
			return ready(b) && b.Status.DriftCorrections == 0
		})
	})

	t.Run("allowed", func(t *testing.T) {
		if out, err := kubectlAs(t, someone, "", "annotate", "-n", ns, "deployment/web", "team=shop"); err != nil {
			t.Errorf("an unowned field was denied: %v\n%s", err, out)
		}
		if out, err := kubectlAs(t, someone, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"mode":"production"}}`,
			"apply", "--server-side", "--field-manager=same-value", "-n", ns, "-f", "-"); err != nil {
			t.Errorf("a write of the same value was denied: %v\n%s", err, out)
		}
		if out, err := kubectlAs(t, someone, "", "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"note":"second"}}`); err != nil {
			t.Errorf("an ignored field was denied: %v\n%s", err, out)
		}
		// The agent's own writes: a change of the Bundle is applied.
		updateBundleSpec(t, ns, "web", strings.Replace(spec, "image: nginx:1", "image: nginx:3", 1))
		waitFor(t, "the agent's apply of the new image", func() (bool, string) {
			d, err := cp.Client().AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return d.Spec.Template.Spec.Containers[0].Image == "nginx:3", d.Spec.Template.Spec.Containers[0].Image
		})
	})

	t.Run("break-glass", func(t *testing.T) {
		applyYAML(t, fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bundle-override, namespace: %[1]s}
rules:
- apiGroups: [driftwatch.io]
  resources: [bundles]
  resourceNames: [web]
  verbs: [%[2]s]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bundle-override, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: bundle-override}
subjects: [{kind: User, name: oncall}]
`, ns, guard.OverrideVerb))
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"incident-42"}},"data":{"mode":"debug"}}`, guard.OverrideAnnotation)
		out, err := exec.Command(cp.Bin("kubectl"), "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--as", "oncall",
			"patch", "-n", ns, "configmap/settings", "-p", patch).CombinedOutput()
		if err != nil {
			t.Fatalf("the holder of %s with the annotation was denied: %v\n%s", guard.OverrideVerb, err, out)
		}
		waitEvent(t, ns, "web", "DriftOverridden", ".data.mode", "incident-42")
		if cm, _ := configMap(t, ns, "settings"); cm == nil || cm.Data["mode"] != "debug" {
			t.Errorf("the override was not left in place: %v", cm)
		}
		if m := agent.scrape(t); !strings.Contains(m, `driftwatch_drift_overrides_total{bundle="web",group="",kind="ConfigMap"`) {
			t.Errorf("no driftwatch_drift_overrides_total:\n%s", grep(m, "driftwatch_drift_"))
		}
		// Without the annotation the drift is corrected.
		if out, err := exec.Command(cp.Bin("kubectl"), "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--as", "oncall",
			"annotate", "-n", ns, "configmap/settings", guard.OverrideAnnotation+"-").CombinedOutput(); err != nil {
			t.Fatalf("removing the annotation: %v\n%s", err, out)
		}
		restored(t, "the overridden field corrected once the annotation is gone", ns, "mode", "production")
	})

	t.Run("the policy follows the Bundle", func(t *testing.T) {
		name := guard.Name(types.NamespacedName{Namespace: ns, Name: "web"})
		updateBundleSpec(t, ns, "web", strings.Replace(spec, "mode: Prevent", "mode: Correct", 1))
		waitFor(t, "the policy removed when the Bundle leaves Prevent mode", func() (bool, string) {
			_, err := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		waitBundle(t, ns, "web", "no Guarded condition", func(b *manifests.Bundle) bool { return condition(b, manifests.ConditionGuarded) == nil })
		updateBundleSpec(t, ns, "web", spec)
		guarded(t, ns, "web", "Preventing")
		inEffect(t, ns, false)
		if err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the policy and its bindings removed with the Bundle", func() (bool, string) {
			list, err := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, b := range list.Items {
				if strings.HasPrefix(b.Name, name) {
					return false, b.Name
				}
			}
			_, err = cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})
}

func TestWarnModeWarnsAndCorrects(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+"\ndrift: {mode: Warn}\n"))
	waitBundle(t, ns, "web", "Ready", ready)
	guarded(t, ns, "web", "Warning")
	inEffect(t, ns, true)
	out, err := kubectlAs(t, someone, "", "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"mode":"debug"}}`)
	if err != nil {
		t.Fatalf("Warn mode denied: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Warning:") || !strings.Contains(out, "owned by Bundle "+ns+"/web") || !strings.Contains(out, "(user "+someone+")") {
		t.Errorf("kubectl printed no warning naming the Bundle and the user:\n%s", out)
	}
	restored(t, "the edit corrected", ns, "mode", "production")
}

// TestAutoscaledReplicasAreLeftToTheAutoscaler: a HorizontalPodAutoscaler
// that scales an owned Deployment takes .spec.replicas from the Bundle in
// every mode: its writes are not drift, not corrected, not denied.
func TestAutoscaledReplicasAreLeftToTheAutoscaler(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+"\ndrift: {mode: Prevent}\n"))
	waitBundle(t, ns, "web", "Ready", ready)
	guarded(t, ns, "web", "Preventing")
	inEffect(t, ns, false)
	if out, err := kubectlAs(t, someone, "", "scale", "--dry-run=server", "-n", ns, "deployment/web", "--replicas=4"); err == nil {
		t.Fatalf("before an autoscaler, /scale was let through:\n%s", out)
	}
	applyYAML(t, fmt.Sprintf(`apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: %s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 10
`, ns))
	waitBundle(t, ns, "web", "the status names the autoscaler", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && strings.Contains(c.Message, "HorizontalPodAutoscaler web")
	})
	// What the autoscaler does: it writes replicas through /scale, as the
	// controller manager — here someone else, as no controller runs HPAs
	// on fake nodes without metrics.
	waitFor(t, "a write of replicas through /scale let through", func() (bool, string) {
		out, err := kubectlAs(t, someone, "", "scale", "-n", ns, "deployment/web", "--replicas=4")
		return err == nil, out
	})
	b := waitBundle(t, ns, "web", "no drift from the autoscaler's write", func(b *manifests.Bundle) bool {
		return ready(b) && !isTrue(b, manifests.ConditionDrifted)
	})
	d, err := cp.Client().AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 4 || b.Status.DriftCorrections != 0 {
		t.Errorf("replicas %d, %d corrections: the autoscaler's write was taken back", *d.Spec.Replicas, b.Status.DriftCorrections)
	}
}

// TestPreventWithoutPolicyRightsStillCorrects: an agent that may not
// write admission policies says so on the Bundle and keeps correcting.
func TestPreventWithoutPolicyRightsStillCorrects(t *testing.T) {
	setupCRD(t)
	ns := cp.Namespace(t)
	applyYAML(t, fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: %[1]s-no-policies}
rules:
- apiGroups: ["", apps, autoscaling, driftwatch.io, events.k8s.io, coordination.k8s.io, authentication.k8s.io, apiextensions.k8s.io]
  resources: ["*"]
  verbs: ["*"]
`, ns))
	t.Cleanup(func() {
		_ = cp.Client().RbacV1().ClusterRoles().Delete(context.WithoutCancel(t.Context()), ns+"-no-policies", metav1.DeleteOptions{})
	})
	agentBoundTo(t, ns, ns+"-no-policies")
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns+"\ndrift: {mode: Prevent}\n"))
	waitBundle(t, ns, "web", "Ready", ready)
	b := guarded(t, ns, "web", "PolicyUnavailable")
	if c := condition(b, manifests.ConditionGuarded); !strings.Contains(c.Message, "forbidden") {
		t.Errorf("Guarded does not say why: %s", c.Message)
	}
	if _, err := kubectlAs(t, someone, "", "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"mode":"debug"}}`); err != nil {
		t.Fatalf("no policy, yet the edit was denied: %v", err)
	}
	restored(t, "the edit corrected", ns, "mode", "production")
}

// TestPreventLetsTheBundlesAccountWrite: the account a Bundle acts as may
// change what the Bundle owns (it is the Bundle's own identity); anyone
// else may not.
func TestPreventLetsTheBundlesAccountWrite(t *testing.T) {
	ns, _ := setup(t)
	deployerIn(t, ns)
	createBundle(t, ns, "cfg", "defaultNamespace: "+ns+"\nserviceAccountName: deployer\ndrift: {mode: Prevent}\n"+
		resourcesOf(configMapDoc("settings", "")))
	waitBundle(t, ns, "cfg", "Ready", ready)
	guarded(t, ns, "cfg", "Preventing")
	inEffect(t, ns, false)
	account := "system:serviceaccount:" + ns + ":deployer"
	out, err := exec.Command(cp.Bin("kubectl"), "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--as", account,
		"patch", "-n", ns, "configmap/settings", "-p", `{"data":{"k":"from-the-account"}}`).CombinedOutput()
	if err != nil {
		t.Fatalf("the Bundle's own account was denied: %v\n%s", err, out)
	}
	// Allowed, and still drift from the Bundle: corrected as the account.
	restored(t, "the account's edit corrected", ns, "k", "v")
	out2, err := kubectlAs(t, someone, "", "patch", "-n", ns, "configmap/settings", "-p", `{"data":{"k":"from-alice"}}`)
	denied(t, "an edit by someone else", out2, err, ns+"/cfg", ".data.k")
}
