// Package platform_test pins down, on a real kube-apiserver, the behaviour of
// server-side apply and managedFields that driftwatch's drift engine relies
// on, and the kwok behaviour its pod-crash path relies on. If an upgrade of
// Kubernetes changes any of it, these tests say so before the agent breaks.
package platform_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/test/cluster"
)

var cp *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m, &cp, cluster.Options{})) }

var deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

const deploymentYAML = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
  namespace: %s
  labels: {app: web, tier: frontend}
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
`

var (
	replicasPath = fieldpath.MakePathOrDie("spec", "replicas")
	imagePath    = fieldpath.MakePathOrDie("spec", "template", "spec", "containers",
		fieldpath.KeyByFields("name", "web"), "image")
	tierPath = fieldpath.MakePathOrDie("metadata", "labels", "tier")
)

func TestManagedFieldsMoveToWhoeverChangedThem(t *testing.T) {
	ns := cp.Namespace(t)
	dyn := dynamic.NewForConfigOrDie(cp.Config(cluster.AdminUser))
	res := dyn.Resource(deployments).Namespace(ns)

	// The drift engine's baseline: what the server records for our apply.
	obj := apply(t, res, "driftwatch", fmt.Sprintf(deploymentYAML, "web", ns, 2), false)
	ours := ownedBy(t, obj, "driftwatch", "")
	for _, p := range []fieldpath.Path{replicasPath, imagePath, tierPath} {
		if !ours.Has(p) {
			t.Fatalf("after our apply, driftwatch does not own %s; it owns:\n%s", p, ours)
		}
	}

	t.Run("kubectl scale moves .spec.replicas to kubectl on the scale subresource", func(t *testing.T) {
		kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
		obj := get(t, res, "web")
		assertMoved(t, obj, replicasPath, "kubectl", "scale")
	})

	t.Run("kubectl patch of an image moves it to kubectl-patch", func(t *testing.T) {
		kubectl(t, "patch", "-n", ns, "deployment/web", "--type=strategic",
			"-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}`)
		obj := get(t, res, "web")
		assertMoved(t, obj, imagePath, "kubectl-patch", "")
	})

	t.Run("removing a field takes it out of our entry", func(t *testing.T) {
		kubectl(t, "label", "-n", ns, "deployment/web", "tier-")
		obj := get(t, res, "web")
		if ownedBy(t, obj, "driftwatch", "").Has(tierPath) {
			t.Fatalf("label tier was removed but driftwatch still owns %s", tierPath)
		}
		if _, found := obj.GetLabels()["tier"]; found {
			t.Fatalf("label tier still present: %v", obj.GetLabels())
		}
	})

	t.Run("a forced re-apply takes every field back", func(t *testing.T) {
		obj := apply(t, res, "driftwatch", fmt.Sprintf(deploymentYAML, "web", ns, 2), true)
		ours := ownedBy(t, obj, "driftwatch", "")
		for _, p := range []fieldpath.Path{replicasPath, imagePath, tierPath} {
			if !ours.Has(p) {
				t.Errorf("after the forced re-apply driftwatch does not own %s", p)
			}
		}
		if got := ownedBy(t, obj, "kubectl", "scale"); got.Has(replicasPath) {
			t.Errorf("kubectl still owns %s after the forced re-apply", replicasPath)
		}
	})
}

func TestApplyByAnotherManager(t *testing.T) {
	ctx := t.Context()
	ns := cp.Namespace(t)
	dyn := dynamic.NewForConfigOrDie(cp.Config(cluster.AdminUser))
	res := dyn.Resource(deployments).Namespace(ns)
	apply(t, res, "driftwatch", fmt.Sprintf(deploymentYAML, "web", ns, 2), false)

	t.Run("the same value is shared, not taken", func(t *testing.T) {
		obj := apply(t, res, "bystander", fmt.Sprintf(deploymentYAML, "web", ns, 2), false)
		if !ownedBy(t, obj, "driftwatch", "").Has(replicasPath) {
			t.Fatalf("an apply of the same value by another manager took %s from driftwatch", replicasPath)
		}
		if !ownedBy(t, obj, "bystander", "").Has(replicasPath) {
			t.Fatalf("the other manager does not co-own %s", replicasPath)
		}
	})

	t.Run("a different value without force is a conflict naming us", func(t *testing.T) {
		_, err := applyErr(ctx, res, "intruder", fmt.Sprintf(deploymentYAML, "web", ns, 7), false)
		if !apierrors.IsConflict(err) {
			t.Fatalf("want a 409 conflict, got %v", err)
		}
		if !strings.Contains(err.Error(), `"driftwatch"`) || !strings.Contains(err.Error(), ".spec.replicas") {
			t.Fatalf("the conflict does not name manager driftwatch and .spec.replicas: %v", err)
		}
	})

	t.Run("a forced apply with a different value takes the field", func(t *testing.T) {
		obj := apply(t, res, "intruder", fmt.Sprintf(deploymentYAML, "web", ns, 7), true)
		assertMoved(t, obj, replicasPath, "intruder", "")
		// Forcing takes the field from every manager that held it.
		if ownedBy(t, obj, "bystander", "").Has(replicasPath) {
			t.Fatalf("bystander still co-owns %s after a forced apply of another value", replicasPath)
		}
	})
}

func TestUnprivilegedUsersAndImpersonation(t *testing.T) {
	ctx := t.Context()
	ns := cp.Namespace(t)
	user := cluster.UnprivilegedUsers[0]

	asUser := dynamic.NewForConfigOrDie(cp.Config(user)).Resource(deployments).Namespace(ns)
	if _, err := asUser.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("%s listed deployments without a grant: want 403, got %v", user, err)
	}

	impersonating := cp.Config(cluster.AdminUser)
	impersonating.Impersonate.UserName = user
	asImpersonated := dynamic.NewForConfigOrDie(impersonating).Resource(deployments).Namespace(ns)
	_, err := asImpersonated.List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `"`+user+`"`) {
		t.Fatalf("admin impersonating %s: want 403 naming %s, got %v", user, user, err)
	}

	// A ServiceAccount token is accepted: the signing key works.
	out := kubectl(t, "create", "token", "default", "-n", ns)
	saConfig := cp.Config(cluster.AdminUser)
	saConfig.BearerToken = strings.TrimSpace(string(out))
	_, err = dynamic.NewForConfigOrDie(saConfig).Resource(deployments).Namespace(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "system:serviceaccount:"+ns+":default") {
		t.Fatalf("ServiceAccount token: want 403 naming the ServiceAccount, got %v", err)
	}
}

func TestKwokRunsPodsAndCrashesThemOnDemand(t *testing.T) {
	ctx := t.Context()
	ns := cp.Namespace(t)
	dyn := dynamic.NewForConfigOrDie(cp.Config(cluster.AdminUser))
	apply(t, dyn.Resource(deployments).Namespace(ns), "driftwatch", fmt.Sprintf(deploymentYAML, "web", ns, 2), false)
	client := cp.Client()

	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas == 2 && d.Status.AvailableReplicas == 2, nil
	})
	if err != nil {
		t.Fatalf("deployment never had 2 ready replicas: %v", err)
	}
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("want 2 pods, got %d", len(pods.Items))
	}
	victim := pods.Items[0]
	if victim.Status.Phase != "Running" || victim.Spec.NodeName == "" {
		t.Fatalf("pod %s: phase %q on node %q, want Running on a kwok node", victim.Name, victim.Status.Phase, victim.Spec.NodeName)
	}

	// kwok's chaos stage: a label makes the container fail.
	patch := []byte(`{"metadata":{"labels":{"pod-container-running-failed.stage.kwok.x-k8s.io":"true"}}}`)
	if _, err := client.CoreV1().Pods(ns).Patch(ctx, victim.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var seen string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cs := range p.Status.ContainerStatuses {
			if term := cs.State.Terminated; term != nil {
				seen = fmt.Sprintf("container %s terminated: exit %d, reason %s", cs.Name, term.ExitCode, term.Reason)
				return term.ExitCode == 1 && term.Reason == "containerFailed", nil
			}
			seen = fmt.Sprintf("container %s state %+v", cs.Name, cs.State)
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod %s never showed a failed container (last seen: %s): %v", victim.Name, seen, err)
	}
}

// apply server-side applies the YAML as manager and fails the test on error.
func apply(t *testing.T, res dynamic.ResourceInterface, manager, doc string, force bool) *unstructured.Unstructured {
	t.Helper()
	obj, err := applyErr(t.Context(), res, manager, doc, force)
	if err != nil {
		t.Fatalf("apply as %s: %v", manager, err)
	}
	return obj
}

func applyErr(ctx context.Context, res dynamic.ResourceInterface, manager, doc string, force bool) (*unstructured.Unstructured, error) {
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		return nil, err
	}
	return res.Apply(ctx, u.GetName(), &u, metav1.ApplyOptions{FieldManager: manager, Force: force})
}

func get(t *testing.T, res dynamic.ResourceInterface, name string) *unstructured.Unstructured {
	t.Helper()
	obj, err := res.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// ownedBy returns the field set that manager holds on subresource ("" for
// the main resource), or an empty set.
func ownedBy(t *testing.T, obj *unstructured.Unstructured, manager, subresource string) *fieldpath.Set {
	t.Helper()
	set := &fieldpath.Set{}
	for _, e := range obj.GetManagedFields() {
		if e.Manager != manager || e.Subresource != subresource || e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			t.Fatalf("managedFields of %s: %v", manager, err)
		}
		set = set.Union(s)
	}
	return set
}

// assertMoved checks that p left driftwatch's set and is now held by
// manager on subresource.
func assertMoved(t *testing.T, obj *unstructured.Unstructured, p fieldpath.Path, manager, subresource string) {
	t.Helper()
	if ownedBy(t, obj, "driftwatch", "").Has(p) {
		t.Errorf("driftwatch still owns %s", p)
	}
	if !ownedBy(t, obj, manager, subresource).Has(p) {
		t.Errorf("%s (subresource %q) does not own %s; managedFields:\n%s", manager, subresource, p, managedFieldsJSON(obj))
	}
}

func managedFieldsJSON(obj *unstructured.Unstructured) string {
	b, _ := json.MarshalIndent(obj.GetManagedFields(), "", "  ") // only for a failure message
	return string(b)
}

// kubectl runs the real kubectl v1.37 as the admin user.
func kubectl(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(cp.Bin("kubectl"), append([]string{"--kubeconfig", cp.Kubeconfig(cluster.AdminUser)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}
