package drift

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/drift/status"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// TestManagerNamesAreBounded: a new field manager per edit (anyone may
// name one) adds no series beyond maxManagerLabels per Bundle, and no
// fight beyond maxFights once the old ones are over.
func TestManagerNamesAreBounded(t *testing.T) {
	key := types.NamespacedName{Namespace: "a", Name: "b"}
	s := newBundleState(key, ownership.NewSet(key, "driftwatch-system"))
	labels := map[string]bool{}
	for i := range 1000 {
		labels[s.managerLabel(fmt.Sprintf("editor-%d", i))] = true
	}
	if len(labels) != maxManagerLabels+1 || !labels[otherManagers] {
		t.Errorf("%d distinct labels for 1,000 managers, want %d and %q", len(labels), maxManagerLabels+1, otherManagers)
	}
	if s.managerLabel("editor-3") != "editor-3" {
		t.Error("a manager with a series of its own lost it")
	}

	now := time.Now()
	ref := manifests.ObjectRef{Kind: "ConfigMap", Namespace: "a", Name: "x"}
	for i := range maxFights {
		s.fights[fightKey{Ref: ref, Field: ".data.k", Manager: fmt.Sprint(i)}] = &fight{hits: []time.Time{now}}
	}
	if s.roomForFight(now, time.Minute) {
		t.Fatal("room for a fight beyond maxFights while every one is recent")
	}
	later := now.Add(2 * time.Minute)
	s.fights[fightKey{Ref: ref, Field: ".data.k", Manager: "0"}] = &fight{hits: []time.Time{later}, Backoff: status.Backoff{Pause: time.Minute, Until: later.Add(time.Minute)}}
	if !s.roomForFight(later, time.Minute) || len(s.fights) != 1 {
		t.Errorf("after the window: room %v, %d fights kept; want the one active fight only", s.roomForFight(later, time.Minute), len(s.fights))
	}
}
