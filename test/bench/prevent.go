package main

// Drift prevented at admission (issue 24): what the ValidatingAdmissionPolicies
// of Bundles in Prevent mode cost the writes they let through.
//
//   - guarded Bundles (Prevent mode) of -prevent-objects ConfigMaps each,
//     added in steps of -prevent-steps (0, 10, 100 by default);
//   - at each step, once every policy is in force, -prevent-writes allowed
//     writes (an unowned annotation) to objects a guarded Bundle owns, and
//     as many to objects no Bundle owns, by a user who is not exempt; the
//     latency of each and the control plane's CPU per write.
//
// Step 0 has no policy at all: it is the baseline of the same writes.
//
//	bin/bench -scenario prevent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/driftwatch/driftwatch/guard"
	"github.com/driftwatch/driftwatch/manifests"
)

const preventNS = "prevent"

func runPrevent(ctx context.Context, o options) error {
	e, err := startEnv(ctx, newWorkload(0, 0, 1, 1), os.Stderr)
	if err != nil {
		return err
	}
	keep := true
	defer func() { e.stop(keep || o.keep) }()
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: preventNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for i := 0; i < o.preventWrites; i++ { // objects no Bundle owns
		if _, err := e.kube.CoreV1().ConfigMaps(preventNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("free-%04d", i)}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	a, err := startAgent(e.c, o.agentBin, filepath.Join(e.dir, "agent.log"), o.agentEnv)
	if err != nil {
		return err
	}
	defer a.stop()
	if err := a.waitReady(ctx); err != nil {
		return err
	}
	fmt.Printf("\nPrevent mode: allowed writes with 0 to %d guarded Bundles of %d ConfigMaps each (%s, commit %s)\n",
		o.preventSteps[len(o.preventSteps)-1], o.preventObjects, time.Now().Format("2006-01-02 15:04"), commit())
	fmt.Printf("  %-16s %-34s %-34s %s\n", "guarded Bundles", "write to an owned object", "write to an unowned object", "control plane CPU per write")
	guarded := 0
	var base [2]writeStats
	for _, step := range o.preventSteps {
		for ; guarded < step; guarded++ {
			if _, err := agentInstallSpec(ctx, e, fmt.Sprintf("g-%03d", guarded), guardedSpec(guarded, o.preventObjects), o.preventObjects); err != nil {
				return err
			}
		}
		if guarded > 0 {
			if err := policiesInForce(ctx, e, guarded); err != nil {
				return err
			}
		} else if _, err := agentInstallSpec(ctx, e, "plain", plainSpec(o.preventObjects), o.preventObjects); err != nil {
			return err
		}
		owned := "cm-000-"
		if guarded == 0 {
			owned = "plain-"
			// Warm the API server's caches and connections first.
			if _, err := timedWrites(ctx, e, "free-", o.preventWrites, o.preventWrites); err != nil {
				return err
			}
		}
		mark := markCPU(e.c.Pids())
		ownedStats, err := timedWrites(ctx, e, owned, o.preventWrites, o.preventObjects)
		if err != nil {
			return err
		}
		freeStats, err := timedWrites(ctx, e, "free-", o.preventWrites, o.preventWrites)
		if err != nil {
			return err
		}
		cpu := mark.since(0)
		if guarded == 0 {
			base = [2]writeStats{ownedStats, freeStats}
		}
		fmt.Printf("  %-16d %-34s %-34s %.2f ms\n", guarded, ownedStats.versus(base[0]), freeStats.versus(base[1]),
			1000*cpu.ControlPlaneSeconds/float64(2*o.preventWrites))
	}
	keep = false
	return nil
}

// guardedSpec is the i-th guarded Bundle: n ConfigMaps in Prevent mode.
func guardedSpec(i, n int) manifests.BundleSpec {
	return configMapsSpec(fmt.Sprintf("cm-%03d-", i), n, manifests.DriftPrevent)
}

// plainSpec is a Bundle of n ConfigMaps in Correct mode: the owned objects
// of the step without policies.
func plainSpec(n int) manifests.BundleSpec {
	return configMapsSpec("plain-", n, manifests.DriftCorrect)
}

func configMapsSpec(prefix string, n int, mode manifests.DriftMode) manifests.BundleSpec {
	var docs strings.Builder
	for j := 0; j < n; j++ {
		fmt.Fprintf(&docs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s%04d}\ndata: {key: value-%d}\n", prefix, j, j)
	}
	return manifests.BundleSpec{DefaultNamespace: preventNS, Drift: manifests.DriftSpec{Mode: mode},
		Resources: []manifests.Resource{{Name: "configmaps.yaml", Content: docs.String()}}}
}

// policiesInForce waits until the policies of the first n guarded Bundles
// deny: a server-side dry run of an owned field's edit is refused with the
// Bundle's name.
func policiesInForce(ctx context.Context, e *env, n int) error {
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("cm-%03d-0000", i)
		bundle := types.NamespacedName{Namespace: bundleNamespace, Name: fmt.Sprintf("g-%03d", i)}
		var last error
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, last = e.kube.CoreV1().ConfigMaps(preventNS).Patch(ctx, name, types.MergePatchType, []byte(`{"data":{"key":"edited"}}`),
				metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return last != nil && strings.Contains(last.Error(), "owned by Bundle "+bundle.String()), nil
		})
		if err != nil {
			return fmt.Errorf("the policy %s never denied an edit: %v", guard.Name(bundle), last)
		}
	}
	return nil
}

// writeStats are the latencies of a series of writes.
type writeStats struct{ latencies []time.Duration }

func (w writeStats) quantile(q float64) time.Duration {
	s := slices.Clone(w.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// versus is "p50 x ms, p99 y ms (a× / b×)" against the baseline's.
func (w writeStats) versus(base writeStats) string {
	p50, p99 := w.quantile(0.5), w.quantile(0.99)
	out := fmt.Sprintf("p50 %.1f, p99 %.1f ms", msOf(p50), msOf(p99))
	if len(base.latencies) > 0 {
		out += fmt.Sprintf(" (%.2f× / %.2f×)", msOf(p50)/msOf(base.quantile(0.5)), msOf(p99)/msOf(base.quantile(0.99)))
	}
	return out
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// timedWrites patches an annotation no Bundle owns on n objects named
// prefix+index (cycling through of them), one at a time, as the bench's
// own user: neither the agent nor a Bundle's account, so every policy that
// matches is evaluated in full and lets it through.
func timedWrites(ctx context.Context, e *env, prefix string, n, of int) (writeStats, error) {
	var w writeStats
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%04d", prefix, i%of)
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"bench.example.com/touched":"%d"}}}`, i)
		start := time.Now()
		if _, err := e.kube.CoreV1().ConfigMaps(preventNS).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return w, fmt.Errorf("an allowed write to %s was refused: %w", name, err)
		}
		w.latencies = append(w.latencies, time.Since(start))
	}
	return w, nil
}
