package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

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
