package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// upstream is a source (management) cluster: etcd and kube-apiserver only,
// with the Bundle CRD, the test's namespace, and the agent's Role of
// manifests/deploy/upstream bound to an unprivileged user, so that the
// agent runs upstream with exactly the rights the shipped Role gives.
type upstream struct {
	c    *cluster.Cluster
	dyn  dynamic.Interface
	user string
}

func startUpstream(t *testing.T, ns, user string) *upstream {
	t.Helper()
	c, err := cluster.Start(t.Context(), cluster.Options{APIServerOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.KeepDir()
			t.Logf("upstream logs in %s", filepath.Join(c.Dir, "logs"))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the upstream: %v", err)
		}
	})
	u := &upstream{c: c, dyn: dynamic.NewForConfigOrDie(c.Config(cluster.AdminUser)), user: user}
	for _, crd := range manifests.CRDs() {
		if _, err := u.dyn.Resource(crdGVR).Apply(t.Context(), crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "e2e", Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Client().CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, self, _, _ := runtime.Caller(0)
	u.kubectl(t, "apply", "-n", ns, "-k", filepath.Join(filepath.Dir(self), "..", "..", "manifests", "deploy", "upstream"))
	u.kubectl(t, "create", "rolebinding", "agent-user", "-n", ns, "--role=driftwatch-agent", "--user="+user)
	waitFor(t, "the Bundle CRD served upstream", func() (bool, string) {
		_, err := u.dyn.Resource(manifests.BundleGVR).Namespace(ns).List(t.Context(), metav1.ListOptions{})
		return err == nil, fmt.Sprint(err)
	})
	return u
}

func (u *upstream) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(cp.Bin("kubectl"), append([]string{"--kubeconfig", u.c.Kubeconfig(cluster.AdminUser)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl (upstream) %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// credentials are the files of the agent's source kubeconfig.
func (u *upstream) credentials(t *testing.T, mount string) map[string][]byte {
	t.Helper()
	ca, err := os.ReadFile(u.c.CACert())
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := kubeconfigYAML(u.c.Host, filepath.Join(mount, "ca.crt"), "tokenFile: "+filepath.Join(mount, "token"))
	return map[string][]byte{"kubeconfig": []byte(kubeconfig), "ca.crt": ca, "token": []byte(u.c.Token(u.user))}
}

// kubeconfigYAML is a kubeconfig for server, trusting the CA at ca, with
// user's credentials given as YAML flow fields ("token: T", "tokenFile: F").
func kubeconfigYAML(server, ca, user string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %s, certificate-authority: %s}
users:
- name: u
  user: {%s}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`, server, ca, user)
}

// secretMount lays files out as the kubelet mounts a Secret: each file is
// a symlink to ..data/file, and ..data a symlink to a timestamped
// directory, swapped atomically (a rename) when the Secret changes.
type secretMount struct {
	dir string
	gen int
}

func newSecretMount(t *testing.T) *secretMount { return &secretMount{dir: t.TempDir()} }

// write replaces the mount's content with files, as the kubelet does.
func (m *secretMount) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	m.gen++
	ts := fmt.Sprintf("..2026_12_03_%06d", m.gen)
	if err := os.Mkdir(filepath.Join(m.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(m.dir, ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(m.dir, "..data")) // none the first time
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(m.dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(m.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func (m *secretMount) kubeconfig() string { return filepath.Join(m.dir, "kubeconfig") }

// metricValue returns the value of one series in a scrape, or -1.
func metricValue(scrape, series string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

const (
	reloadsOK  = `driftwatch_credential_reloads_total{cluster="source",result="success"}`
	reloadsErr = `driftwatch_credential_reloads_total{cluster="source",result="error"}`
)

const upstreamBundle = `
defaultNamespace: %s
resources:
- name: cm.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {mode: %s}
`

// startUpstreamAgent starts an upstream and an agent whose source is that
// upstream through a Secret-like mount, with one Bundle applied.
func startUpstreamAgent(t *testing.T) (string, *upstream, *secretMount, *agent) {
	t.Helper()
	ns := cp.Namespace(t)
	up := startUpstream(t, ns, cluster.UnprivilegedUsers[0])
	mount := newSecretMount(t)
	mount.write(t, up.credentials(t, mount.dir))
	a := startAgent(t, ns, "--source-kubeconfig", mount.kubeconfig(), "--cluster-name", "edge-1",
		"--cluster-label", "env=test", "--heartbeat-period", "1s")
	createBundleOn(t, up.dyn, ns, "app", fmt.Sprintf(upstreamBundle, ns, "one"))
	waitBundleOn(t, up.dyn, ns, "app", "Ready upstream", ready)
	waitConfigMapData(t, ns, "settings", "one")
	return ns, up, mount, a
}

func waitConfigMapData(t *testing.T, ns, name, mode string) *corev1.ConfigMap {
	t.Helper()
	var cm *corev1.ConfigMap
	waitFor(t, "ConfigMap "+name+" with mode "+mode+" in the target", func() (bool, string) {
		var ok bool
		cm, ok = configMap(t, ns, name)
		if !ok {
			return false, "absent"
		}
		return cm.Data["mode"] == mode, fmt.Sprint(cm.Data)
	})
	return cm
}

// TestUpstreamHeartbeatAndStatus: in upstream mode Bundles are read from
// the source, status is written there, objects go to the target, and a
// heartbeat Lease named after the cluster is renewed in the source with
// the agent's version and cluster labels — all with the shipped Role.
func TestUpstreamHeartbeatAndStatus(t *testing.T) {
	ns, up, _, _ := startUpstreamAgent(t)
	var renewed time.Time
	waitFor(t, "the heartbeat Lease renewed twice", func() (bool, string) {
		l, err := up.c.Client().CoordinationV1().Leases(ns).Get(t.Context(), "edge-1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if l.Annotations["driftwatch.io/cluster-labels"] != `{"env":"test"}` || l.Annotations["driftwatch.io/agent-version"] == "" {
			return false, fmt.Sprint(l.Annotations)
		}
		t := l.Spec.RenewTime.Time
		if renewed.IsZero() {
			renewed = t
		}
		return t.After(renewed), fmt.Sprintf("renewed at %s", t)
	})
	// Bundles live upstream only: nothing of them in the target.
	target := dynamic.NewForConfigOrDie(cp.Config(cluster.AdminUser))
	if _, err := target.Resource(manifests.BundleGVR).Namespace(ns).Get(t.Context(), "app", metav1.GetOptions{}); err == nil {
		t.Error("the Bundle exists in the target cluster")
	}

	// The source cluster's namespace owner restricts its Bundles (read
	// with the shipped upstream Role): the Bundle is refused there.
	restriction := fmt.Sprintf(`apiVersion: driftwatch.io/v1alpha1
kind: BundleRestriction
metadata: {name: only-targeted, namespace: %s}
spec: {allowedTargetNamespaces: [%s]}
`, ns, ns)
	path := filepath.Join(t.TempDir(), "restriction.yaml")
	if err := os.WriteFile(path, []byte(restriction), 0o644); err != nil {
		t.Fatal(err)
	}
	up.kubectl(t, "apply", "-f", path)
	waitBundleOn(t, up.dyn, ns, "app", "Refused upstream by the source's restriction", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Reason == "Refused" && strings.Contains(c.Message, "BundleRestriction "+ns+"/only-targeted")
	})
}

// TestUpstreamTokenRotatedInPlace: the upstream revokes the agent's token
// (its API server restarted with a token file without it) and a new
// kubeconfig with a new token is written by a ..data swap. A Bundle change
// made afterwards is applied, by the same process, with one reload.
func TestUpstreamTokenRotatedInPlace(t *testing.T) {
	ns, up, mount, a := startUpstreamAgent(t)
	pid := a.cmd.Process.Pid
	before := metricValue(a.scrape(t), reloadsOK)
	if _, err := up.c.RotateToken(t.Context(), up.user); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to see the source refuse it", func() (bool, string) {
		v := metricValue(a.scrape(t), "driftwatch_source_connected")
		return v == 0, fmt.Sprintf("driftwatch_source_connected %v", v)
	})
	written := time.Now()
	mount.write(t, up.credentials(t, mount.dir))
	updateBundleSpecOn(t, up.dyn, ns, "app", fmt.Sprintf(upstreamBundle, ns, "two"))
	waitConfigMapData(t, ns, "settings", "two")
	t.Logf("new credentials written → Bundle change applied in %.2f s", time.Since(written).Seconds())
	waitBundleOn(t, up.dyn, ns, "app", "Ready upstream after the change", ready)
	if got := a.cmd.Process.Pid; got != pid || a.exited() {
		t.Fatalf("the agent restarted (pid %d → %d)", pid, got)
	}
	if after := metricValue(a.scrape(t), reloadsOK); after != before+1 {
		t.Errorf("%s went %v → %v, want +1", reloadsOK, before, after)
	}
}

// TestUpstreamMovedToANewServer: the Bundles are copied (spec only) to a
// second upstream, the kubeconfig for it is written by a ..data swap and
// the first upstream is stopped. Status appears in the second; no target
// object is written (UIDs and resourceVersions unchanged); drift in the
// target is corrected before, during and after; the process is the same.
func TestUpstreamMovedToANewServer(t *testing.T) {
	ns, up, mount, a := startUpstreamAgent(t)
	pid := a.cmd.Process.Pid
	parent, ok := configMap(t, ns, "bundle-"+ns+"-app")
	if !ok {
		t.Fatal("no ApplySet parent")
	}
	second := startUpstream(t, ns, cluster.UnprivilegedUsers[1])
	createBundleOn(t, second.dyn, ns, "app", fmt.Sprintf(upstreamBundle, ns, "one"))
	// Drift before the move is corrected (and is the last write the target
	// sees until the move is done).
	kubectl(t, "patch", "-n", ns, "configmap/settings", "--type=merge", "-p", `{"data":{"mode":"before"}}`)
	cm := waitConfigMapData(t, ns, "settings", "one")

	written := time.Now()
	mount.write(t, second.credentials(t, mount.dir))
	if err := up.c.Stop(); err != nil {
		t.Fatal(err)
	}
	waitBundleOn(t, second.dyn, ns, "app", "Ready on the new upstream", ready)
	t.Logf("new kubeconfig written → status in the new upstream in %.2f s", time.Since(written).Seconds())

	after, _ := configMap(t, ns, "settings")
	if after.UID != cm.UID || after.ResourceVersion != cm.ResourceVersion {
		t.Errorf("the target object was written by the move: uid %s → %s, resourceVersion %s → %s",
			cm.UID, after.UID, cm.ResourceVersion, after.ResourceVersion)
	}
	if p, _ := configMap(t, ns, "bundle-"+ns+"-app"); p.ResourceVersion != parent.ResourceVersion {
		t.Errorf("the ApplySet parent was written by the move: resourceVersion %s → %s", parent.ResourceVersion, p.ResourceVersion)
	}
	kubectl(t, "patch", "-n", ns, "configmap/settings", "--type=merge", "-p", `{"data":{"mode":"edited"}}`)
	waitConfigMapData(t, ns, "settings", "one")
	if got := a.cmd.Process.Pid; got != pid || a.exited() {
		t.Fatalf("the agent restarted (pid %d → %d)", pid, got)
	}
}

// TestUpstreamAway: the upstream's API server is stopped for 60 s. Drift in
// the target is corrected meanwhile, /readyz stays ready, the agent says
// it is disconnected; when the upstream returns the status it could not
// write is flushed, and nothing else was written to the target.
func TestUpstreamAway(t *testing.T) {
	ns, up, _, a := startUpstreamAgent(t)
	if err := up.c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitFor(t, "driftwatch_source_connected 0", func() (bool, string) {
		v := metricValue(a.scrape(t), "driftwatch_source_connected")
		return v == 0, fmt.Sprint(v)
	})
	t.Logf("source disconnected seen %.1f s after the API server stopped", time.Since(stopped).Seconds())
	kubectl(t, "patch", "-n", ns, "configmap/settings", "--type=merge", "-p", `{"data":{"mode":"edited"}}`)
	corrected := waitConfigMapData(t, ns, "settings", "one")
	if !a.ready(t) {
		t.Error("/readyz is not ready while the upstream is away")
	}
	for time.Since(stopped) < 60*time.Second {
		// The upstream stays away for 60 s; the agent keeps its objects.
		if c, _ := configMap(t, ns, "settings"); c.ResourceVersion != corrected.ResourceVersion {
			t.Fatalf("the target object was written again while the upstream was away: %s → %s", corrected.ResourceVersion, c.ResourceVersion)
		}
		select {
		case <-a.done:
			t.Fatal("the agent exited while the upstream was away")
		case <-time.After(time.Until(stopped.Add(60 * time.Second))):
		}
	}
	if err := up.c.StartAPIServer(t.Context()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitBundleOn(t, up.dyn, ns, "app", "the correction made while away in the status", func(b *manifests.Bundle) bool {
		return ready(b) && b.Status.DriftCorrections >= 1
	})
	t.Logf("status flushed %.1f s after the upstream returned", time.Since(back).Seconds())
	if c, _ := configMap(t, ns, "settings"); c.ResourceVersion != corrected.ResourceVersion {
		t.Errorf("the target object was written when the upstream returned: %s → %s", corrected.ResourceVersion, c.ResourceVersion)
	}
}

// TestUpstreamBadCredentialsFileIsRefused: a truncated kubeconfig is
// reported (metric and log) and the working connection kept; a good file
// afterwards is taken.
func TestUpstreamBadCredentialsFileIsRefused(t *testing.T) {
	ns, up, mount, a := startUpstreamAgent(t)
	good := up.credentials(t, mount.dir)
	bad := map[string][]byte{"kubeconfig": good["kubeconfig"][:len(good["kubeconfig"])/2], "ca.crt": good["ca.crt"], "token": good["token"]}
	errsBefore, okBefore := metricValue(a.scrape(t), reloadsErr), metricValue(a.scrape(t), reloadsOK)
	mount.write(t, bad)
	waitFor(t, "the bad file reported", func() (bool, string) {
		v := metricValue(a.scrape(t), reloadsErr)
		return v == errsBefore+1, fmt.Sprintf("%s %v", reloadsErr, v)
	})
	log, _ := os.ReadFile(a.log)
	if !strings.Contains(string(log), "not usable; keeping the current ones") {
		t.Errorf("the agent's log does not report the bad file:\n%s", tail(string(log), 20))
	}
	// The connection is kept: a change upstream still lands.
	updateBundleSpecOn(t, up.dyn, ns, "app", fmt.Sprintf(upstreamBundle, ns, "two"))
	waitConfigMapData(t, ns, "settings", "two")
	good["token"] = []byte(up.c.Token(up.user) + "\n") // changed bytes, same token
	mount.write(t, good)
	waitFor(t, "the good file taken", func() (bool, string) {
		v := metricValue(a.scrape(t), reloadsOK)
		return v == okBefore+1, fmt.Sprintf("%s %v", reloadsOK, v)
	})
	updateBundleSpecOn(t, up.dyn, ns, "app", fmt.Sprintf(upstreamBundle, ns, "three"))
	waitConfigMapData(t, ns, "settings", "three")
	waitBundleOn(t, up.dyn, ns, "app", "Ready upstream", ready)
}

// TestTargetTokenFileRotation: the agent's own credentials are a token
// file, as in-cluster ServiceAccount tokens are (and a kubeconfig with
// tokenFile). The file gets a new token and the old one is revoked (the
// object it was bound to deleted): the agent keeps correcting drift and
// applying Bundle changes, without a restart.
func TestTargetTokenFileRotation(t *testing.T) {
	ns := cp.Namespace(t)
	kubectl(t, "create", "serviceaccount", "agent", "-n", ns)
	kubectl(t, "create", "clusterrolebinding", ns+"-agent", "--clusterrole=cluster-admin", "--serviceaccount="+ns+":agent")
	t.Cleanup(func() {
		_ = cp.Client().RbacV1().ClusterRoleBindings().Delete(context.WithoutCancel(t.Context()), ns+"-agent", metav1.DeleteOptions{})
	})
	token := func(secret string) []byte {
		kubectl(t, "create", "secret", "generic", secret, "-n", ns)
		return []byte(strings.TrimSpace(kubectl(t, "create", "token", "agent", "-n", ns,
			"--bound-object-kind=Secret", "--bound-object-name="+secret)))
	}
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	writeAtomically := func(b []byte) {
		if err := os.WriteFile(tokenPath+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tokenPath+".tmp", tokenPath); err != nil {
			t.Fatal(err)
		}
	}
	first := token("first")
	writeAtomically(first)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(kubeconfigYAML(cp.Host, cp.CACert(), "tokenFile: "+tokenPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	setupCRD(t)
	a := startAgent(t, ns, "--kubeconfig", kubeconfig)
	createBundle(t, ns, "app", fmt.Sprintf(upstreamBundle, ns, "one"))
	waitBundle(t, ns, "app", "Ready", ready)
	pid := a.cmd.Process.Pid

	writeAtomically(token("second"))
	if err := cp.Client().CoreV1().Secrets(ns).Delete(t.Context(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	revoked := cp.Config(cluster.AdminUser)
	revoked.BearerToken = string(first)
	waitFor(t, "the first token revoked", func() (bool, string) {
		_, err := kubernetes.NewForConfigOrDie(revoked).CoreV1().ConfigMaps(ns).List(t.Context(), metav1.ListOptions{})
		return apierrors.IsUnauthorized(err), fmt.Sprint(err)
	})
	kubectl(t, "patch", "-n", ns, "configmap/settings", "--type=merge", "-p", `{"data":{"mode":"edited"}}`)
	waitConfigMapData(t, ns, "settings", "one")
	updateBundleSpec(t, ns, "app", fmt.Sprintf(upstreamBundle, ns, "two"))
	waitConfigMapData(t, ns, "settings", "two")
	waitBundle(t, ns, "app", "Ready after the change", ready)
	if a.cmd.Process.Pid != pid || a.exited() {
		t.Fatal("the agent restarted")
	}
}
