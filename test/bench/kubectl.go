package main

// Baseline "kubectl": `kubectl apply --server-side -f DIR` of the same
// manifests (one file per Bundle) into fresh namespaces, with the kubectl
// that tools/ builds.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// kubectlResult is one kubectl run.
type kubectlResult struct {
	elapsed time.Duration
	cpu     time.Duration // kubectl's own user and system time
}

// runKubectl writes w's manifests into dir and applies them with one
// kubectl invocation; kubectl's output goes to dir/kubectl.log.
func runKubectl(ctx context.Context, c *cluster.Cluster, w *workload, dir string) (kubectlResult, error) {
	manifests := filepath.Join(dir, "kubectl")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		return kubectlResult{}, err
	}
	for _, b := range w.bundles {
		if err := os.WriteFile(filepath.Join(manifests, b.name+".yaml"), []byte(b.yaml(nsName(kubectlPrefix, b.ns))), 0o644); err != nil {
			return kubectlResult{}, err
		}
	}
	logPath := filepath.Join(dir, "kubectl.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return kubectlResult{}, err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, c.Bin("kubectl"), "--kubeconfig", c.Kubeconfig(cluster.AdminUser),
		"apply", "--server-side", "--field-manager=bench-kubectl", "-f", manifests)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return kubectlResult{}, fmt.Errorf("kubectl apply --server-side: %w (output in %s)", err, logPath)
	}
	return kubectlResult{elapsed: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, nil
}
