// Command localcluster runs the tests' local control plane in the
// foreground — etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and kwok with fake nodes — prints how to reach it, and stops every process
// on Ctrl-C or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/driftwatch/driftwatch/test/cluster"
)

func main() {
	nodes := flag.Int("nodes", 1, "number of kwok nodes")
	dir := flag.String("dir", "", "directory for data, kubeconfigs and logs (default: a new temporary one, removed on exit)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: *nodes, Dir: *dir, KeepDir: *dir != "", Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf(`
The local control plane is up (started in %.1f s).

  export KUBECONFIG=%s
  export PATH=%s:$PATH     # kubectl v1.37 and helm v3.22, built by tools/build.sh
  kubectl get nodes

Unprivileged users: %v (kubeconfigs in %s).
Component logs: %s
Press Ctrl-C to stop everything.
`, c.StartDuration.Seconds(), c.Kubeconfig(cluster.AdminUser), c.BinDir,
		cluster.UnprivilegedUsers, c.Dir, filepath.Join(c.Dir, "logs"))
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the control plane")
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
