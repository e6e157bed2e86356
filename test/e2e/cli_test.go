package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// runCLI runs the driftwatch binary and returns its output and exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	default:
		t.Fatal(err)
		return "", "", -1
	}
}

func TestDiffAndRender(t *testing.T) {
	ns, _ := setup(t)
	file := filepath.Join(t.TempDir(), "bundle.yaml")
	spec := webBundle("defaultNamespace: " + ns)
	content := "apiVersion: driftwatch.io/v1alpha1\nkind: Bundle\nmetadata: {name: web, namespace: " + ns + "}\nspec:\n" + indent(spec)
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	kc := cp.Kubeconfig(cluster.AdminUser)

	out, errOut, code := runCLI(t, "render", "-f", file)
	if code != 0 || !strings.Contains(out, "name: web") || !strings.Contains(out, "name: settings") {
		t.Fatalf("render: exit %d\n%s\n%s", code, out, errOut)
	}

	out, errOut, code = runCLI(t, "diff", "-f", file, "--kubeconfig", kc, "--namespace", ns)
	if code != 1 || !strings.Contains(out, "+++ bundle/Deployment.apps/"+ns+"/web") || !strings.Contains(out, "--- /dev/null") {
		t.Fatalf("diff before the first apply: exit %d, want 1 and new objects\n%s\n%s", code, out, errOut)
	}

	createBundle(t, ns, "web", spec)
	waitBundle(t, ns, "web", "Ready", ready)
	out, errOut, code = runCLI(t, "diff", "-f", file, "--kubeconfig", kc, "--namespace", ns)
	if code != 0 || out != "" {
		t.Fatalf("diff of an applied bundle: exit %d, want 0 and no output\n%s\n%s", code, out, errOut)
	}

	// In Detect mode nothing reverts the scale, so diff must show it.
	updateBundleSpec(t, ns, "web", spec+"\ndrift: {mode: Detect}")
	waitBundle(t, ns, "web", "Ready in Detect mode", ready)
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	out, errOut, code = runCLI(t, "diff", "-f", file, "--kubeconfig", kc, "--namespace", ns)
	if code != 1 || !strings.Contains(out, "-  replicas: 5") || !strings.Contains(out, "+  replicas: 2") {
		t.Fatalf("diff after kubectl scale: exit %d, want 1 and the replicas change\n%s\n%s", code, out, errOut)
	}

	// The same binary as a kubectl plugin, run by the real kubectl, with
	// kubectl's own flags.
	plugins := t.TempDir()
	if err := os.Symlink(agentBin, filepath.Join(plugins, "kubectl-driftwatch")); err != nil {
		t.Fatal(err)
	}
	kubectlPlugin := func(args ...string) (string, string, int) {
		cmd := exec.Command(cp.Bin("kubectl"), append([]string{"driftwatch"}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}
	waitBundle(t, ns, "web", "the scale reported as drift", func(b *manifests.Bundle) bool { return isTrue(b, manifests.ConditionDrifted) })
	out, errOut, code = kubectlPlugin("status", "--kubeconfig", kc, "--context", cluster.AdminUser, "-n", ns)
	if code != 0 || !strings.Contains(out, "Deployment/"+ns+"/web") || !strings.Contains(out, "Drifted") ||
		!strings.Contains(out, ".spec.replicas changed by kubectl/scale") {
		t.Errorf("kubectl driftwatch status: exit %d, want the drifted Deployment with its field and culprit\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = kubectlPlugin("diff", "-f", file, "--kubeconfig", kc, "--context", cluster.AdminUser, "-n", ns)
	if code != 1 || !strings.Contains(out, "+  replicas: 2") {
		t.Errorf("kubectl driftwatch diff: exit %d, want 1 and the replicas change\n%s\n%s", code, out, errOut)
	}
	if out, errOut, code := kubectlPlugin("render", "-f", file); code != 0 || !strings.Contains(out, "name: settings") {
		t.Errorf("kubectl driftwatch render: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, errOut, code := kubectlPlugin("status", "--context", "no-such-context", "--kubeconfig", kc); code != 2 || !strings.Contains(errOut, "no-such-context") {
		t.Errorf("kubectl driftwatch status with an unknown context: exit %d, stderr %q", code, errOut)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: driftwatch.io/v1alpha1\nkind: Bundle\nmetadata: {name: x}\nspec:\n  resources:\n  - name: a.yaml\n    content: \"kind: [\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI(t, "render", "-f", bad); code != 1 || !strings.Contains(errOut, "a.yaml#1: invalid YAML") {
		t.Errorf("render of a broken bundle: exit %d, stderr %q", code, errOut)
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimLeft(s, "\n"), "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestLeaderElection(t *testing.T) {
	ns, first := setup(t, "--leader-elect", "--leader-elect-lease-duration=3s")
	second := startAgent(t, ns, "--leader-elect", "--leader-elect-lease-duration=3s")
	createBundle(t, ns, "web", webBundle("defaultNamespace: "+ns))
	waitBundle(t, ns, "web", "Ready", ready)

	leader, standby := first, second
	if !leader.ready(t) {
		leader, standby = second, first
	}
	if !leader.ready(t) || standby.ready(t) {
		t.Fatalf("want exactly one ready agent: first %v, second %v", first.ready(t), second.ready(t))
	}
	leader.stop(t) // releases the Lease
	waitFor(t, "the standby to take over", func() (bool, string) { return standby.ready(t), "standby not ready" })
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=5")
	waitEvent(t, ns, "web", "DriftCorrected", ".spec.replicas", "kubectl/scale")
}
