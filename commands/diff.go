package commands

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// runDiff prints, per object of a Bundle file, the unified diff between
// the live object and what a server-side dry-run apply would make of it.
// Like kubectl diff it exits 1 when anything would change, and above 1 on
// errors.
func runDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "bundle file (YAML)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the target cluster (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	namespace := fs.String("namespace", "driftwatch-system", "the agent's namespace (where ApplySet parents live)")
	fieldManager := fs.String("field-manager", "driftwatch", "server-side apply field manager")
	cluster := clusterFlags(fs, "diff for") // the driftwatch-cluster ConfigMap's labels are laid over them
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, ok := diffBundleFile(*file, stderr)
	if !ok {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	copts := clusters.DefaultOptions()
	copts.Kubeconfig = *kubeconfig
	provider, err := clusters.New(copts)
	if err != nil {
		fmt.Fprintln(stderr, "diff:", err)
		return 2
	}
	return diffBundle(ctx, provider.Target(), b, *namespace, *fieldManager, cluster(), stdout, stderr)
}

// diffBundleFile reads diff's -f file, saying on stderr what is wrong.
func diffBundleFile(file string, stderr io.Writer) (*manifests.Bundle, bool) {
	if file == "" {
		fmt.Fprintln(stderr, "diff: -f bundle.yaml is required")
		return nil, false
	}
	b, err := readBundle(file)
	if err != nil {
		fmt.Fprintln(stderr, "diff:", err)
		return nil, false
	}
	return b, true
}

// diffBundle diffs a Bundle against the cluster of target; namespace is
// the agent's (where ApplySet parents live).
func diffBundle(ctx context.Context, target *clusters.Clients, b *manifests.Bundle, namespace, fieldManager string, cluster manifests.Cluster, stdout, stderr io.Writer) int {
	pipeline, cleanup, err := templatePipeline(target)
	if err != nil {
		fmt.Fprintln(stderr, "diff:", err)
		return 2
	}
	defer cleanup()
	rendered, err := pipeline.Render(ctx, b, withClusterConfigMap(ctx, target, namespace, cluster))
	if err != nil {
		fmt.Fprintln(stderr, "diff:", err)
		return 2
	}
	applier := apply.New(target.Dynamic, nil, target.Mapper, apply.Options{FieldManager: fieldManager})
	ns := b.Namespace
	if ns == "" {
		ns = namespace
	}
	set := ownership.NewSet(types.NamespacedName{Namespace: ns, Name: b.Name}, namespace)
	desired, invalid := applier.Prepare(rendered.Take(), apply.TargetOf(set, &rendered.Spec))
	errs := rendered.Errors
	for _, inv := range invalid {
		errs = append(errs, inv)
	}
	changed := false
	force := rendered.Spec.Drift.ForceEnabled()
	for _, d := range desired {
		text, err := diffOne(ctx, applier, d, force)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if text != "" {
			changed = true
			fmt.Fprint(stdout, text)
		}
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, "error:", e)
	}
	switch {
	case len(errs) > 0:
		return 2
	case changed:
		return 1
	default:
		return 0
	}
}

// diffOne returns the unified diff between the live object and what a
// server-side dry-run apply of d would make of it.
func diffOne(ctx context.Context, applier *apply.Applier, d apply.Desired, force bool) (string, error) {
	live, err := applier.Get(ctx, d)
	if err != nil {
		return "", err
	}
	merged, err := applier.DryRun(ctx, d, apply.ApplyOptions{Force: force})
	if err != nil {
		return "", err
	}
	return unifiedDiff(d.Ref.String(), live, merged)
}

// unifiedDiff compares two versions of an object as YAML, without the
// metadata that changes on every write, and without status: a bundle
// declares none, and it moves between the two reads.
func unifiedDiff(name string, live, merged *unstructured.Unstructured) (string, error) {
	text := func(u *unstructured.Unstructured) (string, error) {
		if u == nil {
			return "", nil
		}
		u = u.DeepCopy()
		for _, f := range []string{"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp"} {
			unstructured.RemoveNestedField(u.Object, "metadata", f)
		}
		delete(u.Object, "status")
		b, err := yaml.Marshal(u.Object)
		return string(b), err
	}
	live, merged = maskSecrets(live, merged)
	a, err := text(live)
	if err != nil {
		return "", err
	}
	b, err := text(merged)
	if err != nil {
		return "", err
	}
	if a == b {
		return "", nil
	}
	from := "live/" + name
	if live == nil {
		from = "/dev/null"
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b),
		FromFile: from, ToFile: "bundle/" + name, Context: 3,
	})
}

// maskSecrets returns copies of a Secret's two versions with every value
// of data and stringData masked, as kubectl diff masks them: "***" where
// both sides agree or one side has none, "*** (before)" and "*** (after)"
// where the value changed. Other kinds come back as they are.
func maskSecrets(from, to *unstructured.Unstructured) (*unstructured.Unstructured, *unstructured.Unstructured) {
	isSecret := func(u *unstructured.Unstructured) bool {
		return u != nil && u.GetKind() == "Secret" && u.GroupVersionKind().Group == ""
	}
	if !isSecret(from) && !isSecret(to) {
		return from, to
	}
	if from != nil {
		from = from.DeepCopy()
	}
	if to != nil {
		to = to.DeepCopy()
	}
	for _, field := range []string{"data", "stringData"} {
		var a, b map[string]any
		if from != nil {
			a, _, _ = unstructured.NestedMap(from.Object, field)
		}
		if to != nil {
			b, _, _ = unstructured.NestedMap(to.Object, field)
		}
		for k, av := range a {
			if bv, ok := b[k]; ok && fmt.Sprint(av) != fmt.Sprint(bv) {
				a[k], b[k] = "*** (before)", "*** (after)"
				continue
			}
			a[k] = "***"
			if _, ok := b[k]; ok {
				b[k] = "***"
			}
		}
		for k := range b {
			if _, ok := a[k]; !ok {
				b[k] = "***"
			}
		}
		if a != nil {
			_ = unstructured.SetNestedMap(from.Object, a, field) // a map of strings always sets
		}
		if b != nil {
			_ = unstructured.SetNestedMap(to.Object, b, field)
		}
	}
	return from, to
}
