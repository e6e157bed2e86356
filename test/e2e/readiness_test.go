package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

// TestReadinessFollowsKstatus: a Deployment whose Pods cannot be scheduled
// keeps its Bundle NotReady with kstatus' reason; once it can roll out, the
// Bundle becomes Ready.
func TestReadinessFollowsKstatus(t *testing.T) {
	ns, _ := setup(t)
	spec := strings.Replace(webBundle("defaultNamespace: "+ns), "      containers:",
		"      nodeSelector: {no-such-node: \"true\"}\n          containers:", 1)
	if spec == webBundle("defaultNamespace: "+ns) {
		t.Fatal("test setup: nodeSelector not inserted")
	}
	createBundle(t, ns, "web", spec)
	b := waitBundle(t, ns, "web", "NotReady naming the Deployment", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "Deployment/web") &&
			b.Status.Summary.NotReady == 1 && b.Status.Summary.Ready == 1
	})
	t.Logf("not ready: %s", condition(b, manifests.ConditionReady).Message)
	if !isTrue(b, manifests.ConditionSynced) {
		t.Errorf("an applied but unavailable Deployment must not make the Bundle unsynced: %+v", b.Status.Conditions)
	}

	updateBundleSpec(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready once the Deployment rolled out", ready)
}

// TestPodCrashMarksTheBundleNotReady crashes a Pod of an owned Deployment
// with kwok's chaos stage: the Bundle turns NotReady naming pod, container,
// reason and exit code, a Warning event says so, and the crash is counted.
func TestPodCrashMarksTheBundleNotReady(t *testing.T) {
	ns, agent := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)
	ctx := t.Context()
	client := cp.Client()
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods of web: %v, %v", pods, err)
	}
	victim := pods.Items[0].Name
	patch := []byte(`{"metadata":{"labels":{"pod-container-running-failed.stage.kwok.x-k8s.io":"true"}}}`)
	start := time.Now()
	if _, err := client.CoreV1().Pods(ns).Patch(ctx, victim, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	b := waitBundle(t, ns, "web", "NotReady with the crash", func(b *manifests.Bundle) bool {
		for _, r := range b.Status.Resources {
			if r.Kind == "Deployment" && r.State == manifests.StateNotReady &&
				strings.Contains(r.Message, victim) && strings.Contains(r.Message, "container web") &&
				strings.Contains(r.Message, "containerFailed") && strings.Contains(r.Message, "exit code 1") {
				return !ready(b)
			}
		}
		return false
	})
	t.Logf("crash in the Bundle's status %s after the chaos label: %s", time.Since(start).Round(time.Millisecond),
		condition(b, manifests.ConditionReady).Message)
	waitEvent(t, ns, "web", "PodCrashed", victim, "containerFailed")
	waitFor(t, "the crash counted once", func() (bool, string) {
		line := grep(agent.scrape(t), fmt.Sprintf(`driftwatch_pod_crashes_total{bundle="web",namespace="%s",reason="containerFailed"}`, ns))
		return strings.HasSuffix(line, " 1"), line
	})

	// The Pod goes away: the crash no longer holds the Bundle back.
	if err := client.CoreV1().Pods(ns).Delete(ctx, victim, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitBundle(t, ns, "web", "Ready again once the crashed Pod is replaced", ready)
}

// TestFailedBarePodIsRecreated: a bare Pod of a Bundle that fails is
// deleted and created anew.
func TestFailedBarePodIsRecreated(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "pod", `
defaultNamespace: `+ns+`
resources:
- name: pod.yaml
  content: |
    apiVersion: v1
    kind: Pod
    metadata: {name: solo}
    spec:
      containers:
      - {name: main, image: busybox:1}
`)
	waitBundle(t, ns, "pod", "Ready", ready)
	ctx := t.Context()
	client := cp.Client()
	old, err := client.CoreV1().Pods(ns).Get(ctx, "solo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old.Status.Phase = "Failed"
	old.Status.Reason = "Evicted"
	if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, old, metav1.UpdateOptions{FieldManager: "e2e-evictor"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed Pod re-created (new UID)", func() (bool, string) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "solo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.UID != old.UID && p.Status.Phase != "Failed", fmt.Sprintf("uid %s phase %s", p.UID, p.Status.Phase)
	})
	waitEvent(t, ns, "pod", "PodRecreating", "Pod/"+ns+"/solo")
	waitBundle(t, ns, "pod", "Ready with the new Pod", ready)
}

func condition(b *manifests.Bundle, t string) *metav1.Condition {
	for i := range b.Status.Conditions {
		if b.Status.Conditions[i].Type == t {
			return &b.Status.Conditions[i]
		}
	}
	return nil
}
