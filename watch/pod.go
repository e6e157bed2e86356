package watch

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// PodState is what crash detection needs of a Pod: its phase and the
// state of each container, without the rest of the Pod.
type PodState struct {
	Phase   corev1.PodPhase
	Reason  string // "Evicted", …
	Message string
	// Containers are the init and app containers' states.
	Containers []ContainerState
}

// ContainerState is one container's current and last termination.
type ContainerState struct {
	Name         string
	RestartCount int32
	// Waiting is the reason the container waits ("CrashLoopBackOff"), if it does.
	Waiting string
	// Terminated is the current termination, LastTerminated the previous one.
	Terminated, LastTerminated *Termination
}

// Termination is how a container ended.
type Termination struct {
	ExitCode int32
	Reason   string // "Error", "OOMKilled", …
	Started  string // RFC 3339; with the container and restart count, it names one run
}

// podState reads a Pod's state from its unstructured form; nil if its
// status cannot be read.
func podState(u *unstructured.Unstructured) *PodState {
	raw, ok := u.Object["status"].(map[string]any)
	if !ok {
		return &PodState{}
	}
	var st corev1.PodStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st); err != nil {
		return nil
	}
	p := &PodState{Phase: st.Phase, Reason: st.Reason, Message: st.Message}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
		for _, c := range list {
			cs := ContainerState{Name: c.Name, RestartCount: c.RestartCount,
				Terminated: termination(c.State.Terminated), LastTerminated: termination(c.LastTerminationState.Terminated)}
			if c.State.Waiting != nil {
				cs.Waiting = c.State.Waiting.Reason
			}
			p.Containers = append(p.Containers, cs)
		}
	}
	return p
}

func termination(t *corev1.ContainerStateTerminated) *Termination {
	if t == nil {
		return nil
	}
	return &Termination{ExitCode: t.ExitCode, Reason: t.Reason, Started: t.StartedAt.UTC().Format("2006-01-02T15:04:05Z")}
}
