package status

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

var (
	deployGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	cmGVR     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	web       = manifests.ObjectRef{Group: "apps", Kind: "Deployment", Namespace: "ns", Name: "web"}
	settings  = manifests.ObjectRef{Kind: "ConfigMap", Namespace: "ns", Name: "settings"}
	extra     = manifests.ObjectRef{Kind: "ConfigMap", Namespace: "ns", Name: "extra"}
)

func inputOf(objs ...Object) Input {
	return Input{Generation: 2, Declared: len(objs), AnyApplied: true,
		Problems: map[manifests.ObjectRef]Problem{}, Drifted: map[manifests.ObjectRef]detect.Finding{}, Objects: objs}
}

func condition(t *testing.T, st manifests.BundleStatus, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
	}
	return *c
}

func TestComputeStatus(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	ready := Object{Ref: web, APIVersion: "apps/v1", GVR: deployGVR, Applied: true}
	cm := Object{Ref: settings, APIVersion: "v1", GVR: cmGVR, Applied: true}
	tests := []struct {
		name   string
		in     func() Input
		want   manifests.Summary
		ready  bool
		synced string // the Synced condition's reason
		check  func(t *testing.T, st manifests.BundleStatus)
	}{
		{name: "all applied and ready", in: func() Input { return inputOf(ready, cm) },
			want: manifests.Summary{Desired: 2, Ready: 2}, ready: true, synced: "Applied"},
		{name: "a rollout in progress", in: func() Input {
			r := ready
			r.Readiness = &watch.Readiness{Status: "InProgress", Message: "Replicas: 0/2"}
			return inputOf(r, cm)
		}, want: manifests.Summary{Desired: 2, Ready: 1, NotReady: 1}, synced: "Applied",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if msg := condition(t, st, manifests.ConditionReady).Message; !strings.Contains(msg, "Deployment/web: InProgress: Replicas: 0/2") {
					t.Errorf("Ready message %q does not say why", msg)
				}
			}},
		{name: "drifted, deleted and in a fight", in: func() Input {
			in := inputOf(ready, cm, Object{Ref: extra, GVR: cmGVR, Applied: true})
			in.Drifted[web] = detect.Finding{Cause: detect.CauseChanged, Fields: []string{".spec.replicas"}, Managers: []string{"kubectl/scale"}}
			in.Drifted[settings] = detect.Deleted()
			in.Fights = []Fight{{FightKey: FightKey{Ref: web, Field: ".spec.replicas", Manager: "kubectl/scale"},
				Backoff: Backoff{Pause: 5 * time.Second, Until: now.Add(time.Second), Last: now.Add(-4 * time.Second)}}}
			return in
		}, want: manifests.Summary{Desired: 3, Ready: 1, Drifted: 1, Missing: 1}, synced: "Applied",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if c := condition(t, st, manifests.ConditionStalled); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "kubectl/scale") {
					t.Errorf("Stalled = %+v, want True naming the manager", c)
				}
				var states []string
				for _, r := range st.Resources {
					states = append(states, r.Name+"="+string(r.State)+"/"+r.ChangedBy)
				}
				if got := strings.Join(states, " "); got != "settings=Missing/deleted web=Drifted/kubectl/scale" {
					t.Errorf("resources: %s", got)
				}
			}},
		{name: "a fight corrected, the other manager taking the field again during the back-off, still stalls", in: func() Input {
			in := inputOf(ready)
			in.Fights = []Fight{{FightKey: FightKey{Ref: web, Field: ".spec.replicas", Manager: "hpa"},
				Backoff: Backoff{Pause: 10 * time.Second, Until: now.Add(-time.Second), Last: now.Add(-9 * time.Second)}}}
			return in
		}, want: manifests.Summary{Desired: 1, Ready: 1}, ready: true, synced: "Applied",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if c := condition(t, st, manifests.ConditionStalled); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, ".spec.replicas is taken again and again by hpa") {
					t.Errorf("Stalled = %+v, want True naming the field and the manager", c)
				}
			}},
		{name: "a fight quiet for its back-off does not stall", in: func() Input {
			in := inputOf(ready)
			in.Fights = []Fight{{FightKey: FightKey{Ref: web, Field: ".spec.replicas", Manager: "hpa"},
				Backoff: Backoff{Pause: 10 * time.Second, Until: now.Add(-time.Second), Last: now.Add(-11 * time.Second)}}}
			return in
		}, want: manifests.Summary{Desired: 1, Ready: 1}, ready: true, synced: "Applied",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if c := condition(t, st, manifests.ConditionStalled); c.Status != metav1.ConditionFalse {
					t.Errorf("Stalled = %+v", c)
				}
			}},
		{name: "only conflicts", in: func() Input {
			in := inputOf(ready, cm)
			in.Problems[settings] = Problem{State: manifests.StateConflict, Manager: "other-tool", Message: "conflict"}
			return in
		}, want: manifests.Summary{Desired: 2, Ready: 1, Conflicts: 1}, synced: "Conflict"},
		{name: "a failed document and a failed apply", in: func() Input {
			in := inputOf(ready, cm)
			in.Declared, in.RenderFailures = 3, 1
			in.BundleErrors = []string{"bad.yaml#1: invalid YAML"}
			in.Problems[settings] = Problem{State: manifests.StateFailed, Message: "forbidden"}
			return in
		}, want: manifests.Summary{Desired: 3, Ready: 1, Failed: 2}, synced: "ApplyFailed",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if msg := condition(t, st, manifests.ConditionSynced).Message; msg != "bad.yaml#1: invalid YAML; forbidden" {
					t.Errorf("Synced message %q", msg)
				}
			}},
		{name: "paused with what it applied ready", in: func() Input {
			in := inputOf(ready)
			in.Paused = true
			return in
		}, want: manifests.Summary{Desired: 1, Ready: 1}, ready: true, synced: "Paused"},
		{name: "a crashing pod", in: func() Input {
			in := inputOf(ready)
			in.Crashes = []PodCrash{{Owner: web, Pod: "web-1", Crash: Crash{Container: "app", Reason: "OOMKilled", ExitCode: 137}}}
			return in
		}, want: manifests.Summary{Desired: 1, NotReady: 1}, synced: "Applied",
			check: func(t *testing.T, st manifests.BundleStatus) {
				if len(st.Resources) != 1 || !strings.Contains(st.Resources[0].Message, "pod web-1 container app: OOMKilled (exit code 137)") {
					t.Errorf("resources %+v", st.Resources)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := Compute(tt.in(), manifests.BundleStatus{}, now)
			if st.Summary != tt.want {
				t.Errorf("summary %+v, want %+v", st.Summary, tt.want)
			}
			if got := condition(t, st, manifests.ConditionReady).Status == metav1.ConditionTrue; got != tt.ready {
				t.Errorf("Ready = %v, want %v (%s)", got, tt.ready, condition(t, st, manifests.ConditionReady).Message)
			}
			if r := condition(t, st, manifests.ConditionSynced).Reason; r != tt.synced {
				t.Errorf("Synced reason %s, want %s", r, tt.synced)
			}
			if st.ObservedGeneration != 2 {
				t.Errorf("observedGeneration %d", st.ObservedGeneration)
			}
			if tt.check != nil {
				tt.check(t, st)
			}
			// The same state later gives the same status: nothing to write.
			if again := Compute(tt.in(), st, now.Add(500*time.Millisecond)); !Equal(again, st) {
				t.Errorf("an unchanged state changed the status:\n%+v\n%+v", st, again)
			}
		})
	}
}
