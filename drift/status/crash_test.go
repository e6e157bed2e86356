package status

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/driftwatch/driftwatch/watch"
)

func TestPodCrash(t *testing.T) {
	term := func(code int32, reason string) *watch.Termination {
		return &watch.Termination{ExitCode: code, Reason: reason, Started: "2026-11-23T10:00:00Z"}
	}
	for _, tc := range []struct {
		name   string
		pod    *watch.PodState
		crash  bool
		reason string
		code   int32
	}{
		{"nil", nil, false, "", 0},
		{"running", &watch.PodState{Phase: corev1.PodRunning, Containers: []watch.ContainerState{{Name: "a"}}}, false, "", 0},
		{"completed with 0", &watch.PodState{Phase: corev1.PodSucceeded, Containers: []watch.ContainerState{{Name: "a", Terminated: term(0, "Completed")}}}, false, "", 0},
		{"terminated non-zero", &watch.PodState{Phase: corev1.PodRunning, Containers: []watch.ContainerState{{Name: "a", Terminated: term(1, "Error")}}}, true, "Error", 1},
		{"OOM killed", &watch.PodState{Containers: []watch.ContainerState{{Name: "a", Terminated: term(137, "OOMKilled")}}}, true, "OOMKilled", 137},
		{"crash loop", &watch.PodState{Containers: []watch.ContainerState{{Name: "a", Waiting: "CrashLoopBackOff", LastTerminated: term(2, "Error")}}}, true, "CrashLoopBackOff", 2},
		{"crash loop of OOM", &watch.PodState{Containers: []watch.ContainerState{{Name: "a", Waiting: "CrashLoopBackOff", LastTerminated: term(137, "OOMKilled")}}}, true, "OOMKilled", 137},
		{"restarted and running again", &watch.PodState{Phase: corev1.PodRunning, Containers: []watch.ContainerState{{Name: "a", RestartCount: 1, LastTerminated: term(1, "Error")}}}, false, "", 0},
		{"evicted", &watch.PodState{Phase: corev1.PodFailed, Reason: "Evicted"}, true, "Evicted", 0},
		{"failed", &watch.PodState{Phase: corev1.PodFailed}, true, "Failed", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := CrashOf(tc.pod)
			if ok != tc.crash || c.Reason != tc.reason || c.ExitCode != tc.code {
				t.Errorf("podCrash = %+v, %v; want crash %v reason %q exit %d", c, ok, tc.crash, tc.reason, tc.code)
			}
		})
	}
	// One failed run is one crash, however many events show it; the next
	// run is another.
	p := &watch.PodState{Containers: []watch.ContainerState{{Name: "a", RestartCount: 3, Terminated: term(1, "Error")}}}
	a, _ := CrashOf(p)
	b, _ := CrashOf(p)
	p.Containers[0].RestartCount = 4
	c, _ := CrashOf(p)
	if a.Run != b.Run || a.Run == c.Run {
		t.Errorf("runs %q %q %q: the same run must keep its name, the next must differ", a.Run, b.Run, c.Run)
	}
}
