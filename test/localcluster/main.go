// Command localcluster runs the tests' local control plane in the
// foreground — etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and kwok with fake nodes — optionally with the driftwatch agent and
// example Bundles, prints how to reach it, and stops every process on
// Ctrl-C or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/driftwatch/driftwatch/test/cluster"
)

func main() {
	nodes := flag.Int("nodes", 1, "number of kwok nodes")
	dir := flag.String("dir", "", "directory for data, kubeconfigs and logs (default: a new temporary one, removed on exit)")
	agent := flag.String("agent", "", "driftwatch binary to run against the cluster (none: only the control plane)")
	crd := flag.String("crd", "manifests/deploy/crd.yaml,manifests/deploy/crd-restriction.yaml", "the CRDs (comma-separated files), installed when -agent is set")
	examples := flag.String("examples", "examples", "directory of example Bundles, applied when -agent is set")
	flag.Parse()
	if err := run(*nodes, *dir, *agent, *crd, *examples); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(nodes int, dir, agent, crd, examples string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: nodes, Dir: dir, KeepDir: dir != "", Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "stopping the control plane")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	kubeconfig := c.Kubeconfig(cluster.AdminUser)
	kubectl := func(args ...string) error {
		cmd := exec.CommandContext(ctx, c.Bin("kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	fmt.Printf(`
The local control plane is up (started in %.1f s).

  export KUBECONFIG=%s
  export PATH=%s:$PATH     # kubectl v1.37 and helm v4.3, built by tools/build.sh
  kubectl get nodes
`, c.StartDuration.Seconds(), kubeconfig, c.BinDir)

	var agentDone chan error
	if agent != "" {
		for _, f := range strings.Split(crd, ",") {
			if err := kubectl("apply", "--server-side", "-f", f); err != nil {
				return err
			}
		}
		if err := kubectl("wait", "--for=condition=Established", "crd/bundles.driftwatch.io", "crd/bundlerestrictions.driftwatch.io"); err != nil {
			return err
		}
		if err := kubectl("create", "namespace", "driftwatch-system"); err != nil {
			return err
		}
		logPath := filepath.Join(c.Dir, "logs", "driftwatch.log")
		logFile, err := os.Create(logPath)
		if err != nil {
			return err
		}
		defer logFile.Close()
		cmd := exec.Command(agent, "agent", "--kubeconfig", kubeconfig, "--metrics-bind-address", "127.0.0.1:8080",
			"--health-probe-bind-address", "127.0.0.1:8081", "-v", "2")
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return err
		}
		agentDone = make(chan error, 1)
		go func() { agentDone <- cmd.Wait() }()
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM) // it may already have exited
			<-agentDone
		}()
		if err := kubectl("apply", "--server-side", "-f", examples); err != nil {
			return err
		}
		fmt.Printf(`
driftwatch is running (log: %s) with the bundles in %s/.

  kubectl get bundles -n driftwatch-system          # READY, SYNCED, DRIFTED
  kubectl scale -n web deployment/api --replicas=5  # reverted at once
  kubectl set image -n web deployment/api api=evil:1
  kubectl delete -n web configmap api-settings      # comes back
  kubectl get events -n web --field-selector involvedObject.name=api   # drift and corrections, on the object
  kubectl get bundle web -n driftwatch-system -o yaml   # status: who changed what
  kubectl scale -n audit deployment/worker --replicas=3 # ignored field: left alone
  kubectl set image -n audit deployment/worker worker=x:1 # Detect mode: reported, kept
  curl -s localhost:8080/metrics | grep ^driftwatch_
`, logPath, examples)
	}
	fmt.Printf("\nComponent logs: %s\nPress Ctrl-C to stop everything.\n", filepath.Join(c.Dir, "logs"))
	select {
	case <-ctx.Done():
	case err := <-agentDone:
		agentDone <- err // for the deferred stop
		return fmt.Errorf("driftwatch agent exited: %v", err)
	}
	return nil
}
