package main

// Kustomize Bundles and cluster labels (issue 14), in one run:
//
//   - a Kustomize Bundle (a base of -helm-objects ConfigMaps and an
//     overlay) synced by the agent;
//   - the agent's API writes when a label of the cluster (the
//     driftwatch-cluster ConfigMap) changes but no rendered object does;
//   - edit → reverted on the Kustomize-rendered objects, interleaved with
//     the floor's.
//
//	bin/bench -scenario kustomize

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

func runKustomize(ctx context.Context, o options) error {
	e, err := startEnv(ctx, newWorkload(0, 0, 1, 1), os.Stderr)
	if err != nil {
		return err
	}
	keep := true
	defer func() { e.stop(keep || o.keep) }()
	const ns = "kust"
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	n := o.helmObjects
	var docs strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&docs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {key: %q}\n", fmt.Sprintf("kust-%04d", i), fmt.Sprintf("value-%d", i))
	}
	spec := manifests.BundleSpec{DefaultNamespace: ns, Kustomize: &manifests.KustomizeSpec{Dir: "overlays/prod"},
		TargetCustomizations: []manifests.TargetCustomization{{Name: "prod", ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}},
		Resources: []manifests.Resource{
			{Name: "base/kustomization.yaml", Content: "resources: [configmaps.yaml]\n"},
			{Name: "base/configmaps.yaml", Content: docs.String()},
			{Name: "overlays/prod/kustomization.yaml", Content: "resources: [../../base]\nlabels: [{pairs: {env: prod}}]\n"},
		}}
	a, err := startAgent(e.c, o.agentBin, filepath.Join(e.dir, "agent.log"), o.agentEnv, "--cluster-label", "env=prod")
	if err != nil {
		return err
	}
	defer a.stop()
	if err := a.waitReady(ctx); err != nil {
		return err
	}
	if _, err := agentInstallSpec(ctx, e, "kust", spec, n); err != nil {
		return err
	}

	// A cluster label that changes nothing rendered.
	offset, err := e.audit.offset()
	if err != nil {
		return err
	}
	from := time.Now()
	if _, err := e.kube.CoreV1().ConfigMaps(bundleNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "driftwatch-cluster",
		Labels: map[string]string{"team": "payments"}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	quietSince, err := e.audit.waitQuiet(ctx, offset, agentUser, from, 5*time.Second, time.Minute)
	if err != nil {
		return err
	}
	reqs, err := e.audit.count(ctx, offset, agentUser, from, quietSince.Add(time.Millisecond))
	if err != nil {
		return err
	}

	obs, err := startObserver(ctx, e.kube)
	if err != nil {
		return err
	}
	defer obs.close()
	edits, err := editsAgainstFloor(ctx, e, obs, ns, n, func(i int) string { return fmt.Sprintf("kust-%04d", i) }, o)
	if err != nil {
		return err
	}
	keep = false
	fmt.Printf("\nKustomize, %d-object base with an overlay (%s, commit %s)\n", n, time.Now().Format("2006-01-02 15:04"), commit())
	fmt.Printf("  a cluster label that changes no rendered object: agent requests %s (writes %d)\n", reqs.summary(), reqs.Writes)
	fmt.Println(edits)
	if reqs.Writes != 0 {
		return fmt.Errorf("a cluster label that changes nothing made %d writes: %s", reqs.Writes, reqs.summary())
	}
	return nil
}
