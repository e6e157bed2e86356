package commands

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/drift"
	"github.com/driftwatch/driftwatch/helmrun"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/manifests/kustomize"
	"github.com/driftwatch/driftwatch/ownership"
)

// runRender prints the desired objects of a Bundle file, offline.
func runRender(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "bundle file (YAML)")
	cluster := clusterFlags(fs, "render for")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "render: -f bundle.yaml is required")
		return 2
	}
	b, err := readBundle(*file)
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 1
	}
	pipeline, cleanup, err := templatePipeline(nil)
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 1
	}
	defer cleanup()
	rendered, err := pipeline.Render(context.Background(), b, cluster())
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 1
	}
	errs := printRendered(stdout, rendered)
	for _, e := range errs {
		fmt.Fprintln(stderr, "error:", e)
	}
	if len(errs) > 0 {
		return 1
	}
	return 0
}

// printRendered writes a render's objects as YAML documents, each headed
// by its source and, where the agent would move it, its namespace; it
// returns the render's errors and those of the printing.
func printRendered(stdout io.Writer, rendered *manifests.Rendered) []error {
	objs, errs := rendered.Take(), rendered.Errors
	spec := rendered.Spec
	if c := spec.Customized; c.Name != "" {
		fmt.Fprintf(stdout, "# targetCustomization: %s\n", c.Name)
		if c.DoNotDeploy {
			fmt.Fprintln(stdout, "# doNotDeploy: nothing is applied on this cluster (what was is pruned)")
		}
	}
	target := apply.TargetOf(ownership.Set{}, &spec) // where the agent puts them
	for i, o := range objs {
		if ns := target.NamespaceOf(o.Object.GetNamespace()); ns != o.Object.GetNamespace() {
			// Offline there is no REST mapping: cluster-scoped kinds are
			// told apart at apply time; here the namespace is only shown.
			fmt.Fprintf(stdout, "# %s (namespace, if namespaced: %s)\n", o.Source, ns)
		} else {
			fmt.Fprintf(stdout, "# %s\n", o.Source)
		}
		out, err := yaml.Marshal(o.Object.Object)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		stdout.Write(out)
		if i < len(objs)-1 {
			fmt.Fprintln(stdout, "---")
		}
	}
	return errs
}

func readBundle(path string) (*manifests.Bundle, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var b manifests.Bundle
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b.Kind != manifests.Kind {
		return nil, fmt.Errorf("%s: kind %q, want %s", path, b.Kind, manifests.Kind)
	}
	return &b, nil
}

// templatePipeline renders Bundles, Helm charts by templating them as an
// install would (no release is read or written); target, if not nil, is
// where valuesFrom and credentials are read.
// cleanup removes the charts it downloaded.
func templatePipeline(target *clusters.Clients) (manifests.Pipeline, func(), error) {
	dir, err := os.MkdirTemp("", "driftwatch-charts-")
	if err != nil {
		return manifests.Pipeline{}, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	releases, err := helmrun.New(helmrun.Options{Template: true, Target: target, CacheDir: dir})
	if err != nil {
		cleanup()
		return manifests.Pipeline{}, nil, err
	}
	return newPipeline(releases, manifests.Limits{}), cleanup, nil
}

// newPipeline is the one render pipeline of the agent, render and diff:
// raw manifests, Kustomize and its overlays, Helm through releases (real
// releases in the agent, templates offline), within limits (zero: the
// defaults).
func newPipeline(releases *helmrun.Releases, limits manifests.Limits) manifests.Pipeline {
	return manifests.Pipeline{Helm: releases, Kustomize: kustomize.Renderer{}, Overlays: kustomize.Patch, Limits: limits}
}

// withClusterConfigMap lays the labels of the cluster ConfigMap in the
// agent's namespace over cluster's, as the agent does; a ConfigMap that
// is not there (or cannot be read) adds nothing.
func withClusterConfigMap(ctx context.Context, target *clusters.Clients, namespace string, cluster manifests.Cluster) manifests.Cluster {
	cm, err := target.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, drift.ClusterConfigMap, metav1.GetOptions{})
	if err != nil {
		return cluster
	}
	return cluster.WithLabels(cm.Labels)
}

// clusterFlags adds --cluster-name and --cluster-label to fs, as the
// agent has them; the returned function reads them after Parse.
func clusterFlags(fs *flag.FlagSet, what string) func() manifests.Cluster {
	name := fs.String("cluster-name", "", what+" the cluster of this name, as the agent's --cluster-name (target customizations)")
	var labels labelFlag
	fs.Var(&labels, "cluster-label", what+" a cluster with this label, key=value (repeatable), as the agent's --cluster-label")
	return func() manifests.Cluster { return manifests.Cluster{Name: *name, Labels: labels} }
}
