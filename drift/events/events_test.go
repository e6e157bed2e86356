package events

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// TestObjectEventsAggregateRepeats: equal events within the series window
// are one event with a count, written by the next flush; a different note
// is an event of its own. (Writes go to a fake client: this checks the
// aggregation only; the API server's acceptance of the events and their
// series is checked by the e2e and fault tests.)
func TestObjectEventsAggregateRepeats(t *testing.T) {
	client := fake.NewClientset()
	e := New(client.EventsV1(), "driftwatch")
	ctx := context.Background()
	cm := corev1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: "web", Name: "settings"}
	bundle := BundleRef(typesName("web", "app"), "")
	drain := func() {
		for {
			select {
			case en := <-e.queue:
				e.write(ctx, en)
			default:
				return
			}
		}
	}
	for range 50 {
		e.Emit(cm, bundle, corev1.EventTypeWarning, "DriftDetected", "Detect", "ConfigMap/web/settings: .data.k changed by intruder")
	}
	e.Emit(cm, bundle, corev1.EventTypeWarning, "DriftDetected", "Detect", "ConfigMap/web/settings: .data.other changed by intruder")
	drain()
	list, err := client.EventsV1().Events("web").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("%d events written for 51 occurrences of 2 notes, want 2", len(list.Items))
	}
	for _, ev := range list.Items {
		if ev.Related == nil || ev.Related.Kind != "Bundle" || ev.Related.Name != "app" || ev.Regarding.Name != "settings" {
			t.Errorf("event regarding %+v related %+v", ev.Regarding, ev.Related)
		}
	}
	e.flush(time.Now())
	drain()
	list, _ = client.EventsV1().Events("web").List(ctx, metav1.ListOptions{})
	var counts []int32
	for _, ev := range list.Items {
		if ev.Series != nil {
			counts = append(counts, ev.Series.Count)
		}
	}
	if len(counts) != 1 || counts[0] != 50 {
		t.Errorf("series counts after a flush: %v, want [50]", counts)
	}
	// Past the window, the entries are forgotten and an equal event is new.
	e.flush(time.Now().Add(seriesWindow + time.Second))
	e.mu.Lock()
	left := len(e.recent)
	e.mu.Unlock()
	if left != 0 {
		t.Errorf("%d events still remembered after their window", left)
	}
}

func typesName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
