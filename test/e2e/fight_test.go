package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

func TestFightIsDetectedAndBacksOff(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)

	// A little autoscaler that sets replicas to 5 whenever it sees another value.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	writes := 0
	t.Cleanup(func() { cancel(); wg.Wait() })
	client := cp.Client()
	w, err := client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String()})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Stop()
		scale := func() {
			_, err := client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", &autoscalingv1.Scale{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 5}},
				metav1.UpdateOptions{FieldManager: "autoscaler"})
			if err == nil {
				mu.Lock()
				writes++
				mu.Unlock()
			}
		}
		scale()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if d, isDep := ev.Object.(interface{ GetName() string }); isDep && d.GetName() == "web" {
					dep, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
					if err == nil && *dep.Spec.Replicas != 5 {
						scale()
					}
				}
			}
		}
	}()

	b := waitBundle(t, ns, "web", "Stalled by a fight over .spec.replicas with autoscaler", func(b *manifests.Bundle) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionStalled && c.Status == metav1.ConditionTrue &&
				strings.Contains(c.Message, ".spec.replicas") && strings.Contains(c.Message, "autoscaler/scale") &&
				strings.Contains(c.Message, "fieldPaths") {
				return true
			}
		}
		return false
	})
	waitEvent(t, ns, "web", "FightDetected", ".spec.replicas", "autoscaler/scale", "spec.drift.ignore")
	mu.Lock()
	w1 := writes
	mu.Unlock()
	// Each take by the autoscaler is corrected at most once, and the
	// corrections stop at the threshold (3) instead of looping.
	if b.Status.DriftCorrections > 4 {
		t.Errorf("%d corrections before the fight was declared; want at most 4", b.Status.DriftCorrections)
	}
	if w1 > int(b.Status.DriftCorrections)+2 {
		t.Errorf("the autoscaler wrote %d times against %d corrections: a loop", w1, b.Status.DriftCorrections)
	}
}

// TestFightAfterManyCorrectionsIsShown: a few dozen corrections on one
// Bundle, then a fight. client-go's core/v1 recorder allows about 25
// events per involved object and then one per 5 minutes: with every event
// on the Bundle, the fight's was dropped. Events about objects are on the
// objects (events/v1, the Bundle related), so the fight is in `kubectl get
// events` for the object, and on the Bundle as Stalled, naming the field
// and the manager, until the fight has been quiet for its back-off.
func TestFightAfterManyCorrectionsIsShown(t *testing.T) {
	ns, _ := setup(t)
	const n = 30
	docs := make([]string, n)
	for i := range docs {
		docs[i] = fmt.Sprintf("    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: cm-%d}\n    data: {k: ours}\n", i)
	}
	createBundle(t, ns, "busy", "defaultNamespace: "+ns+"\nresources:\n- name: cms.yaml\n  content: |\n"+strings.Join(docs, "    ---\n"))
	waitBundle(t, ns, "busy", "Ready", ready)
	edit := func(name, manager, value string) {
		t.Helper()
		_, err := cp.Client().CoreV1().ConfigMaps(ns).Patch(t.Context(), name, types.MergePatchType,
			fmt.Appendf(nil, `{"data":{"k":%q}}`, value), metav1.PatchOptions{FieldManager: manager})
		if err != nil {
			t.Fatal(err)
		}
	}
	reverted := func(name string) {
		t.Helper()
		waitFor(t, name+" reverted", func() (bool, string) {
			cm, _ := configMap(t, ns, name)
			return cm != nil && cm.Data["k"] == "ours", fmt.Sprint(cm)
		})
	}
	for i := 1; i < n; i++ {
		edit(fmt.Sprintf("cm-%d", i), "editor", "theirs")
	}
	for i := 1; i < n; i++ {
		reverted(fmt.Sprintf("cm-%d", i))
	}
	waitBundle(t, ns, "busy", fmt.Sprintf("%d corrections counted", n-1), func(b *manifests.Bundle) bool {
		return b.Status.DriftCorrections >= n-1
	})

	// The fight: cm-0's .data.k taken three times (the threshold) within
	// the fight window.
	for range 2 {
		edit("cm-0", "intruder", "theirs")
		reverted("cm-0")
	}
	edit("cm-0", "intruder", "theirs") // corrected after the back-off (5 s)
	stalled := func(b *manifests.Bundle) bool {
		c := meta.FindStatusCondition(b.Status.Conditions, manifests.ConditionStalled)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "ConfigMap/"+ns+"/cm-0: .data.k") &&
			strings.Contains(c.Message, "intruder")
	}
	waitBundle(t, ns, "busy", "Stalled naming the field and the intruder", stalled)
	waitEvent(t, ns, "busy", "FightDetected", "ConfigMap/"+ns+"/cm-0", ".data.k", "intruder")
	out := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ConfigMap,involvedObject.name=cm-0,reason=FightDetected",
		"-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
	if !strings.Contains(out, "intruder") {
		t.Errorf("kubectl get events for the ConfigMap shows no fight:\n%s", out)
	}

	// Quiet now: Stalled ends once the last take is a back-off old.
	reverted("cm-0")
	waitBundle(t, ns, "busy", "no longer Stalled once the fight is quiet", func(b *manifests.Bundle) bool { return !stalled(b) && ready(b) })
}
