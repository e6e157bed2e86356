package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/manifests"
)

// pluginName is the binary's name as a kubectl plugin: kubectl runs
// kubectl-driftwatch for `kubectl driftwatch ...`.
const pluginName = "kubectl-driftwatch"

// isPlugin reports whether the binary was started as the kubectl plugin.
func isPlugin(argv0 string) bool {
	return strings.HasPrefix(filepath.Base(argv0), pluginName)
}

const pluginUsage = `usage: kubectl driftwatch COMMAND [kubectl flags]

commands:
  status    each Bundle's conditions, and its drifted, missing, failed and
            not-ready objects with fields and culprits
  render    print a bundle's desired objects, offline: render -f bundle.yaml
  diff      server-side dry run against the cluster, a unified diff per object;
            exit 1 when anything would change: diff -f bundle.yaml

kubectl's flags apply (--kubeconfig, --context, -n, --as, ...). -n names the
namespace of the Bundles (status) or the agent's namespace, where ApplySet
parents live (diff); default driftwatch-system.`

// runPlugin runs a command as the kubectl plugin, with kubectl's
// connection flags through k8s.io/cli-runtime.
func runPlugin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, pluginUsage)
		return 0
	}
	switch args[0] {
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "render":
		return runRender(args[1:], stdout, stderr)
	case "diff":
		return runPluginDiff(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return 0
	default:
		fmt.Fprintf(stderr, "kubectl driftwatch: unknown command %q\n%s\n", args[0], pluginUsage)
		return 2
	}
}

// kubectlFlags returns a flag set with kubectl's connection flags.
func kubectlFlags(name string, stderr io.Writer) (*pflag.FlagSet, *clusters.KubectlFlags) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, clusters.BindKubectlFlags(fs)
}

// namespaceOf returns -n, or driftwatch-system when it is not given.
func namespaceOf(kf *clusters.KubectlFlags) string {
	if ns := kf.Namespace(); ns != "" {
		return ns
	}
	return "driftwatch-system"
}

func runPluginDiff(args []string, stdout, stderr io.Writer) int {
	fs, cf := kubectlFlags("diff", stderr)
	file := fs.StringP("filename", "f", "", "bundle file (YAML)")
	fieldManager := fs.String("field-manager", "driftwatch", "server-side apply field manager")
	clusterName := fs.String("cluster-name", "", "the target cluster's name, as the agent's --cluster-name")
	var labels labelFlag
	fs.Var(&labels, "cluster-label", "a label of the target cluster, key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, ok := diffBundleFile(*file, stderr)
	if !ok {
		return 2
	}
	target, err := cf.Clients()
	if err != nil {
		fmt.Fprintln(stderr, "diff:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return diffBundle(ctx, target, b, namespaceOf(cf), *fieldManager, manifests.Cluster{Name: *clusterName, Labels: labels}, stdout, stderr)
}

// runStatus lists the Bundles of a namespace (or all) with their
// conditions, and under each the objects that need attention.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs, cf := kubectlFlags("status", stderr)
	all := fs.BoolP("all-namespaces", "A", false, "Bundles of every namespace")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := cf.Clients()
	if err != nil {
		fmt.Fprintln(stderr, "status:", err)
		return 2
	}
	ns := namespaceOf(cf)
	if *all {
		ns = metav1.NamespaceAll
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	list, err := c.Dynamic.Resource(manifests.BundleGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintln(stderr, "status:", err)
		return 2
	}
	bundles := make([]manifests.Bundle, 0, len(list.Items))
	for _, u := range list.Items {
		var b manifests.Bundle
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
			fmt.Fprintf(stderr, "status: bundle %s/%s: %v\n", u.GetNamespace(), u.GetName(), err)
			continue
		}
		bundles = append(bundles, b)
	}
	sort.Slice(bundles, func(i, j int) bool {
		return bundles[i].Namespace+"/"+bundles[i].Name < bundles[j].Namespace+"/"+bundles[j].Name
	})
	printStatus(stdout, bundles)
	return 0
}

// printStatus writes one line per Bundle and one per object that needs
// attention.
func printStatus(w io.Writer, bundles []manifests.Bundle) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tBUNDLE\tREADY\tSYNCED\tDRIFTED\tRESOURCES\tMESSAGE")
	for _, b := range bundles {
		st := b.Status
		cond := func(t string) string {
			if c := meta.FindStatusCondition(st.Conditions, t); c != nil {
				return string(c.Status)
			}
			return "Unknown"
		}
		msg := ""
		if c := meta.FindStatusCondition(st.Conditions, manifests.ConditionReady); c != nil && c.Status != metav1.ConditionTrue {
			msg = c.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", b.Namespace, b.Name, cond(manifests.ConditionReady),
			cond(manifests.ConditionSynced), cond(manifests.ConditionDrifted), st.Summary.Ready, st.Summary.Desired, msg)
		for _, r := range st.Resources {
			obj := r.Kind + "/" + r.Name
			if r.Namespace != "" {
				obj = r.Kind + "/" + r.Namespace + "/" + r.Name
			}
			detail := r.Message
			if len(r.Fields) > 0 {
				detail = strings.Join(r.Fields, ",") + " changed by " + r.ChangedBy
			}
			fmt.Fprintf(tw, "\t  %s\t%s\t\t\t\t%s\n", obj, r.State, detail)
		}
	}
	_ = tw.Flush() // a failed write to stdout has nowhere to be reported
}
