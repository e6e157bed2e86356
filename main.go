// Command driftwatch is a GitOps agent that applies Bundles with server-side
// apply, watches every object it owns through label-filtered informers and
// repairs drift the moment another field manager takes one of its fields.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if isPlugin(os.Args[0]) {
		os.Exit(runPlugin(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process's exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (len(args[0]) > 0 && args[0][0] == '-') {
		return runAgent(args, stderr)
	}
	switch args[0] {
	case "agent":
		return runAgent(args[1:], stderr)
	case "render":
		return runRender(args[1:], stdout, stderr)
	case "diff":
		return runDiff(args[1:], stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "driftwatch: unknown command %q\n%s\n", args[0], usage)
		return 2
	}
}

const usage = `usage: driftwatch [command] [flags]

commands:
  agent     run the agent (the default)
  render    print a bundle's desired objects, offline: render -f bundle.yaml
  diff      server-side dry run against the cluster, a unified diff per object;
            exit 1 when anything would change: diff -f bundle.yaml
  status    each Bundle's conditions and the objects that need attention
            (kubectl's flags: --kubeconfig, --context, -n, -A)

Installed (or linked) as kubectl-driftwatch, the binary is a kubectl plugin:
kubectl driftwatch status|render|diff.
  version   print the version and the versions of the libraries it was built with`

func versionString() string {
	s := fmt.Sprintf("driftwatch %s (%s, %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/client-go" {
				s += " client-go " + dep.Version
			}
		}
	}
	return s
}
