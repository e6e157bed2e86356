package main

// Upstream mode's two figures (issue 13):
//
//   - fleet: N agents, each with its own target namespace and its own
//     upstream namespace and identity, idle against one upstream API server
//     for a window: requests per agent per minute by verb (from the
//     upstream's audit log) and the upstream API server's CPU.
//   - away: one agent whose upstream is stopped for a window while its
//     objects are edited at a steady rate: drift corrected throughout, the
//     agent's memory sampled (no growth beyond the bounded status queue),
//     and the time to flush status once the upstream is back.
//
//	bin/bench -scenario fleet -fleet-agents 20 -idle-window 10m
//	bin/bench -scenario away -idle-window 10m

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// upstreamEnv is a target and an upstream, both etcd and kube-apiserver
// only; the upstream writes an audit log.
type upstreamEnv struct {
	target, up *cluster.Cluster
	targetKube kubernetes.Interface
	upKube     kubernetes.Interface
	upDyn      dynamic.Interface
	audit      *auditLog
	dir        string
	agents     []*agentProc
	agentUsers []string
	role       rbacv1.Role
}

func startUpstreamEnv(ctx context.Context, users []string, log io.Writer) (*upstreamEnv, error) {
	dir, err := os.MkdirTemp("", "driftwatch-upstream-bench-")
	if err != nil {
		return nil, err
	}
	policy, auditPath := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	e := &upstreamEnv{dir: dir, agentUsers: users}
	if e.target, err = cluster.Start(ctx, cluster.Options{APIServerOnly: true, Log: log}); err != nil {
		return nil, err
	}
	e.up, err = cluster.Start(ctx, cluster.Options{APIServerOnly: true, Log: log, Users: users, APIServerArgs: []string{
		"--audit-policy-file=" + policy, "--audit-log-path=" + auditPath, "--audit-log-maxsize=1000000"}})
	if err != nil {
		e.stop()
		return nil, err
	}
	e.targetKube = e.target.Client()
	e.upKube = e.up.Client()
	e.upDyn = dynamic.NewForConfigOrDie(e.up.Config(cluster.AdminUser))
	e.audit = &auditLog{path: auditPath, kube: e.upKube}
	role, err := os.ReadFile("manifests/deploy/upstream/role.yaml")
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("the upstream Role (run from the repository's root): %w", err)
	}
	if err := yaml.Unmarshal(role, &e.role); err != nil {
		e.stop()
		return nil, err
	}
	for _, crd := range manifests.CRDs() {
		if _, err := e.upDyn.Resource(crdGVR).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "bench", Force: true}); err != nil {
			e.stop()
			return nil, err
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.upDyn.Resource(manifests.BundleGVR).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("the Bundle CRD not served upstream: %w", err)
	}
	return e, nil
}

func (e *upstreamEnv) stop() {
	for _, a := range e.agents {
		a.stop()
	}
	for _, c := range []*cluster.Cluster{e.up, e.target} {
		if c != nil {
			_ = c.Stop() // best effort: the figures are already printed
		}
	}
	os.RemoveAll(e.dir)
}

// addAgent prepares namespace ns in both clusters (prepareAgent) and
// starts an agent for it.
func (e *upstreamEnv) addAgent(ctx context.Context, bin, ns, user string, n int, args ...string) (*agentProc, error) {
	if err := e.prepareAgent(ctx, ns, user, n); err != nil {
		return nil, err
	}
	a, err := startAgent(e.target, bin, filepath.Join(e.dir, ns+".log"), "",
		append([]string{"--kubeconfig", e.target.Kubeconfig(cluster.AdminUser), "--namespace", ns,
			"--source-kubeconfig", e.up.Kubeconfig(user), "--cluster-name", ns}, args...)...)
	if err != nil {
		return nil, err
	}
	e.agents = append(e.agents, a)
	return a, nil
}

// prepareAgent prepares namespace ns in both clusters: the shipped Role
// bound to user upstream, a Bundle "app" of n ConfigMaps.
func (e *upstreamEnv) prepareAgent(ctx context.Context, ns, user string, n int) error {
	for _, kube := range []kubernetes.Interface{e.targetKube, e.upKube} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	role := e.role.DeepCopy()
	role.Namespace = ns
	if _, err := e.upKube.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
	if _, err := e.upKube.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return err
	}
	var docs []string
	for i := 0; i < n; i++ {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%03d}\ndata: {value: v%d}\n", i, i))
	}
	b := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "driftwatch.io/v1alpha1", "kind": "Bundle",
		"metadata": map[string]any{"name": "app", "namespace": ns},
		"spec": map[string]any{"defaultNamespace": ns, "resources": []any{
			map[string]any{"name": "cms.yaml", "content": strings.Join(docs, "---\n")}}},
	}}
	_, err := e.upDyn.Resource(manifests.BundleGVR).Namespace(ns).Create(ctx, b, metav1.CreateOptions{})
	return err
}

// waitReady waits until the Bundle of ns is Ready upstream.
func (e *upstreamEnv) waitReady(ctx context.Context, ns string, timeout time.Duration, cond func(*unstructured.Unstructured) bool) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		u, err := e.upDyn.Resource(manifests.BundleGVR).Namespace(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return conditionTrue(u, manifests.ConditionReady) && (cond == nil || cond(u)), nil
	})
}

// runFleet is the fleet scenario.
func runFleet(ctx context.Context, o options) error {
	users := make([]string, o.fleetAgents)
	for i := range users {
		users[i] = fmt.Sprintf("agent-%02d", i)
	}
	fmt.Fprintf(os.Stderr, "bench: fleet: %d agents against one upstream\n", len(users))
	e, err := startUpstreamEnv(ctx, users, os.Stderr)
	if err != nil {
		return err
	}
	defer e.stop()
	apiserver := e.up.Pids()[1]
	baseWindow := min(o.idleWindow, 2*time.Minute)
	base, err := cpuOver(apiserver, baseWindow)
	if err != nil {
		return err
	}
	for i, u := range users {
		if _, err := e.addAgent(ctx, o.agentBin, fmt.Sprintf("fleet-%02d", i), u, 10); err != nil {
			return err
		}
	}
	for i := range users {
		if err := e.waitReady(ctx, fmt.Sprintf("fleet-%02d", i), 2*time.Minute, nil); err != nil {
			return fmt.Errorf("fleet-%02d not Ready upstream: %w", i, err)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: every Bundle Ready upstream; settling 30 s, then idle %s\n", o.idleWindow)
	time.Sleep(30 * time.Second) // a measurement window, not synchronisation: the syncs' writes end
	offset, err := e.audit.offset()
	if err != nil {
		return err
	}
	from := time.Now()
	cpu, err := cpuOver(apiserver, o.idleWindow)
	if err != nil {
		return err
	}
	to := time.Now()
	minutes := to.Sub(from).Minutes()
	total := map[string]int{}
	for _, u := range users {
		r, err := e.audit.count(ctx, offset, u, from, to)
		if err != nil {
			return err
		}
		for k, v := range r.ByVerb {
			total[k] += v
		}
	}
	keys := make([]string, 0, len(total))
	for k := range total {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	perAgentMin := 0.0
	fmt.Printf("fleet: %d agents idle against one upstream for %s\n", len(users), to.Sub(from).Round(time.Second))
	for _, k := range keys {
		v := float64(total[k]) / float64(len(users)) / minutes
		perAgentMin += v
		fmt.Printf("  %-40s %6.2f per agent per minute\n", k, v)
	}
	rate, baseRate := cpu/(minutes*60), base/baseWindow.Seconds()
	perAgent := max(rate-baseRate, 0) / float64(len(users))
	fmt.Printf("  all requests: %.2f per agent per minute\n", perAgentMin)
	fmt.Printf("  upstream kube-apiserver CPU: %.4f cores with the agents, %.4f cores before they started (%s): %.5f cores per agent\n",
		rate, baseRate, baseWindow, perAgent)
	fmt.Printf("  extrapolated to 10,000 agents: %.0f requests/s, %.1f cores of kube-apiserver for them\n",
		perAgentMin*10000/60, perAgent*10000)
	return nil
}

// runAway is the away scenario.
func runAway(ctx context.Context, o options) error {
	e, err := startUpstreamEnv(ctx, []string{"agent-00"}, os.Stderr)
	if err != nil {
		return err
	}
	defer e.stop()
	const ns, objects = "away", 100
	a, err := e.addAgent(ctx, o.agentBin, ns, "agent-00", objects)
	if err != nil {
		return err
	}
	if err := e.waitReady(ctx, ns, 2*time.Minute, nil); err != nil {
		return err
	}
	before, err := a.memory()
	if err != nil {
		return err
	}
	if err := e.up.StopAPIServer(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: away: upstream stopped; editing one of %d objects every %s for %s\n", objects, o.awayEditInterval, o.idleWindow)
	start := time.Now()
	edits, maxRSS := 0, before.RSS
	var samples []string
	next := start
	for time.Since(start) < o.idleWindow {
		name := fmt.Sprintf("cm-%03d", rand.N(objects))
		patch := fmt.Sprintf(`{"data":{"value":"edited-%d"}}`, edits)
		if _, err := e.targetKube.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(patch),
			metav1.PatchOptions{FieldManager: "intruder"}); err != nil {
			return err
		}
		edits++
		if time.Since(next) >= 0 {
			m, err := a.memory()
			if err != nil {
				return err
			}
			maxRSS = max(maxRSS, m.RSS)
			samples = append(samples, fmt.Sprintf("%4.0fs %5.1f MiB (heap %4.1f)", time.Since(start).Seconds(), m.RSS/(1<<20), m.Heap/(1<<20)))
			next = next.Add(time.Minute)
		}
		time.Sleep(o.awayEditInterval) // the drift load's pace
	}
	after, err := a.memory()
	if err != nil {
		return err
	}
	corrected, err := a.scrape("driftwatch_drift_correction_seconds_count")
	if err != nil {
		return err
	}
	if err := e.up.StartAPIServer(ctx); err != nil {
		return err
	}
	back := time.Now()
	err = e.waitReady(ctx, ns, 2*time.Minute, func(u *unstructured.Unstructured) bool {
		n, _, _ := unstructured.NestedInt64(u.Object, "status", "driftCorrections")
		return float64(n) >= corrected
	})
	if err != nil {
		return fmt.Errorf("status not flushed after the upstream returned: %w", err)
	}
	fmt.Printf("away: upstream stopped for %s; %d edits (one every %s), %.0f corrections\n",
		o.idleWindow, edits, o.awayEditInterval, corrected)
	fmt.Printf("  agent RSS before %.1f MiB, after %.1f MiB, max %.1f MiB; heap before %.1f, after %.1f MiB\n",
		before.RSS/(1<<20), after.RSS/(1<<20), maxRSS/(1<<20), before.Heap/(1<<20), after.Heap/(1<<20))
	for _, s := range samples {
		fmt.Printf("  %s\n", s)
	}
	fmt.Printf("  status with the corrections written %.2f s after the upstream returned\n", time.Since(back).Seconds())
	return nil
}

// cpuOver returns the CPU seconds that process pid uses over window.
func cpuOver(pid int, window time.Duration) (float64, error) {
	c0, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(window) // the window being measured
	c1, err := procCPU(pid)
	return c1 - c0, err
}
