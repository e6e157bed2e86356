package main

// The environment of one run: a control plane of its own with an audit log,
// the Bundle CRD, the namespaces of every object set, and user "alice"
// (the agent's identity, so that the audit log tells its requests apart)
// bound to cluster-admin.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// agentUser is the identity of the agent: one of the cluster's users
// without rights, bound to cluster-admin by the benchmark.
const agentUser = "alice"

// Namespace prefixes of the object sets.
const (
	agentPrefix   = "dw"
	ceilingPrefix = "ceil"
	kubectlPrefix = "kctl"
	floorNS       = "floor"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// env is a running control plane set up for one run.
type env struct {
	c     *cluster.Cluster
	dir   string // work files: audit policy and log, kubectl's manifests
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	meta  metadata.Interface
	audit *auditLog
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`

// startEnv starts a control plane that writes an audit log of every
// request (level Metadata) and prepares it for w.
func startEnv(ctx context.Context, w *workload, log io.Writer) (_ *env, err error) {
	dir, err := os.MkdirTemp("", "driftwatch-bench-")
	if err != nil {
		return nil, err
	}
	policy, auditPath := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	c, err := cluster.Start(ctx, cluster.Options{Log: log, APIServerArgs: []string{
		"--audit-policy-file=" + policy, "--audit-log-path=" + auditPath,
		// The log backend rotates at 100 MB unless told otherwise; a
		// 50,000-object run writes more than that.
		"--audit-log-maxsize=1000000",
		// /debug/pprof for -apiserver-profile (it costs nothing until a
		// profile is taken).
		"--profiling=true",
	}})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := c.Config(cluster.AdminUser)
	e := &env{c: c, dir: dir,
		kube: kubernetes.NewForConfigOrDie(cfg), dyn: dynamic.NewForConfigOrDie(cfg), meta: metadata.NewForConfigOrDie(cfg)}
	e.audit = &auditLog{path: auditPath, kube: e.kube}
	defer func() {
		if err != nil {
			e.stop(true)
		}
	}()
	if err := e.setup(ctx, w); err != nil {
		return nil, err
	}
	return e, nil
}

// stop stops the control plane; keep leaves its directory and the work
// files for a look at the logs.
func (e *env) stop(keep bool) {
	if keep {
		e.c.KeepDir()
		fmt.Fprintf(os.Stderr, "bench: kept %s (control plane) and %s (audit log, manifests)\n", e.c.Dir, e.dir)
	} else {
		defer os.RemoveAll(e.dir)
	}
	if err := e.c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: stopping the control plane:", err)
	}
}

func (e *env) setup(ctx context.Context, w *workload) error {
	for _, crd := range manifests.CRDs() {
		if _, err := e.dyn.Resource(crdGVR).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "bench"}); err != nil {
			return fmt.Errorf("CRD %s: %w", crd.GetName(), err)
		}
	}
	names := []string{bundleNamespace, floorNS}
	for ns := 0; ns < w.namespaces; ns++ {
		names = append(names, nsName(agentPrefix, ns), nsName(ceilingPrefix, ns), nsName(kubectlPrefix, ns),
			nsName(ceilingMetaPrefix, ns), nsName(ceilingWatchedPrefix, ns))
	}
	for _, n := range names {
		if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("namespace %s: %w", n, err)
		}
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: agentUser}},
	}
	if _, err := e.kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("binding %s to cluster-admin: %w", agentUser, err)
	}
	// Bundles can be created once the CRD is served; pods once their
	// namespace's default ServiceAccount exists.
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, err := e.dyn.Resource(manifests.BundleGVR).Namespace(bundleNamespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			last = "bundles not served: " + err.Error()
			return false, nil
		}
		sas, err := e.kube.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=default"})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		have := map[string]bool{}
		for _, sa := range sas.Items {
			have[sa.Namespace] = true
		}
		for _, n := range names {
			if !have[n] {
				last = "no default ServiceAccount in " + n
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("setting up (%s): %w", last, err)
	}
	return nil
}

// waitDeploymentsSettled waits until every Deployment in the cluster has
// its pods ready, so that the controllers' work for one phase does not
// spill into the next one's figures.
func (e *env) waitDeploymentsSettled(ctx context.Context, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		deps, err := e.kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, d := range deps.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			s := d.Status
			if s.ObservedGeneration != d.Generation || s.UpdatedReplicas != want || s.ReadyReplicas != want || s.Replicas != want {
				last = fmt.Sprintf("deployment %s/%s: %d/%d ready, %d updated, %d in all", d.Namespace, d.Name, s.ReadyReplicas, want, s.UpdatedReplicas, s.Replicas)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for deployments to settle (%s): %w", last, err)
	}
	return nil
}
