// Package e2e runs the driftwatch agent, built from this checkout, as a
// separate process against the real local control plane, and checks what a
// user sees: objects, Bundle status, events and metrics.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	runtimeconv "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

var (
	cp        *cluster.Cluster
	agentBin  string
	dyn       dynamic.Interface
	buildLogs bytes.Buffer
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "driftwatch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	agentBin = filepath.Join(dir, "driftwatch")
	_, self, _, _ := runtime.Caller(0)
	// The tags of the Makefile's build: the binary users run; with
	// DRIFTWATCH_E2E_RACE=1 (make race) built with the race detector, and
	// a test whose agent reports a data race fails (agent.stop).
	args := []string{"build", "-tags=fieldsv1string", "-o", agentBin}
	if os.Getenv("DRIFTWATCH_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = filepath.Join(filepath.Dir(self), "..", "..")
	build.Stdout, build.Stderr = &buildLogs, &buildLogs
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building the agent: %v\n%s", err, buildLogs.String())
		return 1
	}
	return cluster.Run(m, &cp, cluster.Options{})
}

// setup installs the CRD (once per package) and returns the test's
// namespace, where its Bundles, its objects and its agent's ApplySet
// parents live, and a running agent that watches it.
func setup(t *testing.T, extraArgs ...string) (string, *agent) {
	t.Helper()
	setupCRD(t)
	ns := cp.Namespace(t)
	return ns, startAgent(t, ns, extraArgs...)
}

// setupCRD installs the Bundle CRD in the target cluster, once per package.
func setupCRD(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	if dyn == nil {
		dyn = dynamic.NewForConfigOrDie(cp.Config(cluster.AdminUser))
		for _, crd := range manifests.CRDs() {
			_, err := dyn.Resource(crdGVR).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "e2e", Force: true})
			if err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the Bundle and BundleRestriction CRDs to be served", func() (bool, string) {
			_, err := dyn.Resource(manifests.BundleGVR).List(ctx, metav1.ListOptions{})
			if err == nil {
				_, err = dyn.Resource(manifests.RestrictionGVR).List(ctx, metav1.ListOptions{})
			}
			return err == nil, fmt.Sprint(err)
		})
	}
}

// agent is a running driftwatch process.
type agent struct {
	cmd     *exec.Cmd
	log     string
	metrics string // base URL of the metrics server
	health  string // base URL of the health server
	done    chan struct{}
}

// ready reports whether the agent's /readyz answers 200: its workers run.
func (a *agent) ready(t *testing.T) bool {
	t.Helper()
	resp, err := http.Get(a.health + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func startAgent(t *testing.T, namespace string, extraArgs ...string) *agent {
	t.Helper()
	return startAgentEnv(t, nil, namespace, extraArgs...)
}

// startAgentEnv is startAgent with env as the process's environment (nil:
// the test's).
func startAgentEnv(t *testing.T, env []string, namespace string, extraArgs ...string) *agent {
	t.Helper()
	ports, err := cluster.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"agent", "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--namespace", namespace,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1]), "-v", "2"}, extraArgs...)
	cmd := exec.Command(agentBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agent{cmd: cmd, log: logPath, metrics: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		health: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status is read through a.done
		logFile.Close()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.stop(t)
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			i := bytes.Index(b, []byte("WARNING: DATA RACE"))
			t.Errorf("the agent reported a data race:\n%s", tail(string(b[i:]), 80))
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", tail(string(b), 60))
		}
	})
	waitFor(t, "the agent's metrics endpoint", func() (bool, string) {
		select {
		case <-a.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("agent exited:\n%s", b)
		default:
		}
		resp, err := http.Get(a.metrics + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return a
}

// stop sends SIGTERM and waits for the agent to exit (SIGKILL after 10 s).
func (a *agent) stop(t *testing.T) {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM) // it may have exited meanwhile
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		t.Errorf("agent did not stop within 10 s of SIGTERM")
	}
}

// exited reports whether the agent process has ended.
func (a *agent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// scrape returns the agent's metrics exposition.
func (a *agent) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds, failing with its last description.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 60*time.Second, true,
		func(context.Context) (bool, error) {
			ok, desc := cond()
			last = desc
			return ok, nil
		})
	if err != nil {
		t.Fatalf("waiting for %s: %v; last seen: %s", what, err, last)
	}
}

// createBundle creates a Bundle from YAML (name and namespace filled in).
func createBundle(t *testing.T, ns, name, spec string) { createBundleOn(t, dyn, ns, name, spec) }

// createBundleOn creates a Bundle in the cluster of client.
func createBundleOn(t *testing.T, client dynamic.Interface, ns, name, spec string) {
	t.Helper()
	u := bundleObject(t, ns, name, spec)
	if _, err := client.Resource(manifests.BundleGVR).Namespace(ns).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating bundle %s: %v", name, err)
	}
}

// updateBundleSpec replaces a Bundle's spec.
func updateBundleSpec(t *testing.T, ns, name, spec string) {
	updateBundleSpecOn(t, dyn, ns, name, spec)
}

// updateBundleSpecOn replaces a Bundle's spec in the cluster of client.
func updateBundleSpecOn(t *testing.T, client dynamic.Interface, ns, name, spec string) {
	t.Helper()
	want := bundleObject(t, ns, name, spec)
	waitFor(t, "the bundle update", func() (bool, string) {
		cur, err := client.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cur.Object["spec"] = want.Object["spec"]
		_, err = client.Resource(manifests.BundleGVR).Namespace(ns).Update(t.Context(), cur, metav1.UpdateOptions{})
		return err == nil, fmt.Sprint(err)
	})
}

func bundleObject(t *testing.T, ns, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var specMap map[string]any
	if err := yaml.Unmarshal([]byte(spec), &specMap); err != nil {
		t.Fatalf("bundle spec: %v", err)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "driftwatch.io/v1alpha1", "kind": "Bundle",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     specMap,
	}}
}

// getBundle reads a Bundle.
func getBundle(t *testing.T, ns, name string) *manifests.Bundle {
	t.Helper()
	u, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b manifests.Bundle
	if err := runtimeconv.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// waitBundle waits until cond holds for the Bundle's status.
func waitBundle(t *testing.T, ns, name, what string, cond func(*manifests.Bundle) bool) *manifests.Bundle {
	t.Helper()
	return waitBundleOn(t, dyn, ns, name, what, cond)
}

// waitBundleOn waits until cond holds for the status of a Bundle in the
// cluster of client.
func waitBundleOn(t *testing.T, client dynamic.Interface, ns, name, what string, cond func(*manifests.Bundle) bool) *manifests.Bundle {
	t.Helper()
	var b *manifests.Bundle
	waitFor(t, "bundle "+name+": "+what, func() (bool, string) {
		u, err := client.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		b = &manifests.Bundle{}
		if err := runtimeconv.DefaultUnstructuredConverter.FromUnstructured(u.Object, b); err != nil {
			return false, err.Error()
		}
		st, _ := yaml.Marshal(b.Status)
		return cond(b), string(st)
	})
	return b
}

func isTrue(b *manifests.Bundle, cond string) bool {
	return meta.IsStatusConditionTrue(b.Status.Conditions, cond)
}

func ready(b *manifests.Bundle) bool {
	return isTrue(b, manifests.ConditionReady) && b.Status.ObservedGeneration == b.Generation
}

// events returns the notes of the events with reason about the Bundle:
// regarding it, or regarding one of its objects and related to it (in any
// namespace: a cluster-scoped object's are in "default").
func events(t *testing.T, ns, bundle, reason string) []string {
	t.Helper()
	list, err := cp.Client().EventsV1().Events("").List(t.Context(), metav1.ListOptions{FieldSelector: "reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	isBundle := func(r *corev1.ObjectReference) bool {
		return r != nil && r.Kind == manifests.Kind && r.Namespace == ns && r.Name == bundle
	}
	var out []string
	for _, e := range list.Items {
		if isBundle(&e.Regarding) || isBundle(e.Related) {
			out = append(out, e.Note)
		}
	}
	return out
}

// waitEvent waits for an event on the Bundle whose message contains every
// one of parts.
func waitEvent(t *testing.T, ns, bundle, reason string, parts ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a %s event mentioning %q", reason, parts), func() (bool, string) {
		msgs := events(t, ns, bundle, reason)
	next:
		for _, m := range msgs {
			for _, p := range parts {
				if !strings.Contains(m, p) {
					continue next
				}
			}
			return true, m
		}
		return false, strings.Join(msgs, " | ")
	})
}

func configMap(t *testing.T, ns, name string) (*corev1.ConfigMap, bool) {
	t.Helper()
	cm, err := cp.Client().CoreV1().ConfigMaps(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm, true
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(cp.Bin("kubectl"), append([]string{"--kubeconfig", cp.Kubeconfig(cluster.AdminUser)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func configMapObject(ns, name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string]string{"owner": "nobody"}}
}
