package cluster

import (
	"errors"
	"os"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartStop starts a control plane of its own, checks what a client
// sees, stops it and checks that no process and no directory is left.
func TestStartStop(t *testing.T) {
	ctx := t.Context()
	c, err := Start(ctx, Options{Nodes: 2, Log: t.Output()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() }) // a second Stop is a no-op; this one is for failures

	v, err := c.Client().Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.0" || v.Major != "1" || v.Minor != "37" {
		t.Errorf("/version: got %s (major %q minor %q), want v1.37.0", v.GitVersion, v.Major, v.Minor)
	}
	nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("want 2 nodes, got %d", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			t.Errorf("node %s is not Ready and schedulable: %+v", n.Name, n.Spec.Taints)
		}
	}
	for _, user := range UnprivilegedUsers {
		if _, err := os.Stat(c.Kubeconfig(user)); err != nil {
			t.Errorf("no kubeconfig for %s: %v", user, err)
		}
	}

	pids := c.Pids()
	if len(pids) != 5 {
		t.Fatalf("want 5 components running, got %d", len(pids))
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill -0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop: %v", c.Dir, err)
	}
}

func TestKwokStagesAreSeparateDocuments(t *testing.T) {
	s := kwokStages()
	want := []string{"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete",
		"pod-delete", "pod-container-running-failed"}
	for _, name := range want {
		if !containsLine(s, "  name: "+name) {
			t.Errorf("stage %s missing", name)
		}
	}
	if got := countLines(s, "---"); got != len(want)-1 {
		t.Errorf("want %d document separators, got %d", len(want)-1, got)
	}
}
