package status

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/driftwatch/driftwatch/watch"
)

// Crash is a Pod whose container failed, or a Pod that failed.
type Crash struct {
	Container string
	// Reason: CrashLoopBackOff, OOMKilled, Error, Evicted, Failed, or the
	// reason the container's termination gives.
	Reason   string
	ExitCode int32
	// Run names the failed run (container, restart count, start time), so
	// that a crash is counted once however many events show it.
	Run string
}

// CrashOf classifies a Pod's state: a container that terminated with a
// non-zero exit code, waits in CrashLoopBackOff or was OOM-killed, or a Pod
// that failed or was evicted. ok is false for a healthy Pod.
func CrashOf(p *watch.PodState) (c Crash, ok bool) {
	if p == nil {
		return Crash{}, false
	}
	for _, cs := range p.Containers {
		switch {
		case cs.Terminated != nil && (cs.Terminated.ExitCode != 0 || cs.Terminated.Reason == "OOMKilled"):
			return Crash{Container: cs.Name, Reason: orDefault(cs.Terminated.Reason, "Error"), ExitCode: cs.Terminated.ExitCode,
				Run: fmt.Sprintf("%s/%d/%s", cs.Name, cs.RestartCount, cs.Terminated.Started)}, true
		case cs.Waiting == "CrashLoopBackOff":
			c := Crash{Container: cs.Name, Reason: "CrashLoopBackOff", Run: fmt.Sprintf("%s/%d", cs.Name, cs.RestartCount)}
			if cs.LastTerminated != nil {
				c.ExitCode = cs.LastTerminated.ExitCode
				if cs.LastTerminated.Reason == "OOMKilled" {
					c.Reason = "OOMKilled"
				}
			}
			return c, true
		}
	}
	if p.Phase == corev1.PodFailed {
		return Crash{Reason: orDefault(p.Reason, "Failed"), Run: "pod/" + string(p.Phase)}, true
	}
	return Crash{}, false
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// String describes a crash for status and events.
func (c Crash) String() string {
	if c.Container == "" {
		return c.Reason
	}
	return fmt.Sprintf("container %s: %s (exit code %d)", c.Container, c.Reason, c.ExitCode)
}
