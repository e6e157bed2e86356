// Package commands holds driftwatch's commands — the agent, render, diff
// and the kubectl plugin's status — and their flags; main.go only calls
// Main.
package commands

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the build's version, as Main was given it.
var version = "dev"

// Main runs the command that argv names and returns the process's exit
// code: as kubectl-driftwatch (argv[0]) the kubectl plugin, else
// driftwatch's own subcommands.
func Main(buildVersion string, argv []string, stdout, stderr io.Writer) int {
	version = buildVersion
	if len(argv) > 0 && isPlugin(argv[0]) {
		return runPlugin(argv[1:], stdout, stderr)
	}
	return run(argv[min(1, len(argv)):], stdout, stderr)
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
