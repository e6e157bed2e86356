package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
)

// Run is a test package's TestMain body: it starts one control plane for
// the package, stores it in *c, runs the tests and stops every process, also
// when tests fail or panic. When a test fails, the components' logs are kept
// and their location printed. It returns the exit code for os.Exit.
//
//	var cp *cluster.Cluster
//	func TestMain(m *testing.M) { os.Exit(cluster.Run(m, &cp, cluster.Options{})) }
func Run(m *testing.M, c **Cluster, opts Options) (code int) {
	flag.Parse()
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	cl, err := Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	*c = cl
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n", r)
			code = 2
		}
		if code != 0 {
			cl.KeepDir()
			fmt.Fprintf(os.Stderr, "tests failed: control plane logs kept in %s/logs\n", cl.Dir)
		}
		if err := cl.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
			code = 1
		}
	}()
	return m.Run()
}
