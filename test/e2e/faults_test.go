package e2e

// Faults a real cluster has, each on the real control plane: the API
// server and etcd killed and restarted, watches expired by a compaction,
// the agent killed in the middle of a large sync, the network to the API
// server cut, and a flood of edits. Each test logs, for the closing note
// and the README, the seconds from recovery to the first correct
// reconcile (go test -v -run 'TestFault' ./test/e2e).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
	"github.com/driftwatch/driftwatch/test/cluster"
)

// configMapsBundle declares n ConfigMaps prefix-0 … prefix-(n-1) in ns.
func configMapsBundle(ns, prefix string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "defaultNamespace: %s\nresources:\n- name: cms.yaml\n  content: |\n", ns)
	for i := range n {
		fmt.Fprintf(&b, "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: %s-%d}\n    data: {k: ours}\n", prefix, i)
	}
	return b.String()
}

// editUntilAccepted edits a ConfigMap's data.k as manager, retrying while
// the API server does not accept writes yet (it may answer before etcd
// does), and returns when the edit was written.
func editUntilAccepted(t *testing.T, client kubernetes.Interface, ns, name, manager string) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, "an edit of "+name+" accepted", func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := client.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType,
			[]byte(`{"data":{"k":"theirs"}}`), metav1.PatchOptions{FieldManager: manager})
		at = time.Now()
		return err == nil, fmt.Sprint(err)
	})
	return at
}

// revertedAfter waits until the ConfigMap holds the Bundle's value again
// and returns how long after since that took.
func revertedAfter(t *testing.T, ns, name string, since time.Time) time.Duration {
	t.Helper()
	waitFor(t, name+" reverted", func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		cm, err := cp.Client().CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cm.Data["k"] == "ours", cm.Data["k"]
	})
	return time.Since(since)
}

// ownedUIDs returns the UIDs of the ConfigMaps of ns that carry a Bundle
// label, by name.
func ownedUIDs(t *testing.T, ns string) map[string]types.UID {
	t.Helper()
	list, err := cp.Client().CoreV1().ConfigMaps(ns).List(t.Context(), metav1.ListOptions{LabelSelector: ownership.BundleLabel})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]types.UID{}
	for _, cm := range list.Items {
		out[cm.Name] = cm.UID
	}
	return out
}

// sameObjects fails the test if an object was re-created (another UID) or
// lost since before.
func sameObjects(t *testing.T, ns string, before map[string]types.UID) {
	t.Helper()
	after := ownedUIDs(t, ns)
	for name, uid := range before {
		if after[name] != uid {
			t.Errorf("ConfigMap %s: UID %s before the fault, %q after: re-created or lost", name, uid, after[name])
		}
	}
}

// outage is how long a killed component stays down: long enough for
// client-go's retries to back off (800 ms doubling), as a real restart is.
const outage = 10 * time.Second

// controllersRecover makes the test wait, at its end, until the control
// plane's controllers work again after the fault it made.
func controllersRecover(t *testing.T) {
	t.Cleanup(func() {
		if err := cp.ControllersAnswer(context.WithoutCancel(t.Context()), 3*time.Minute); err != nil {
			t.Errorf("the controller manager did not recover from the fault: %v", err)
		}
	})
}

// down lets a fault last d — its length, not a synchronisation — failing
// the test if the agent exits meanwhile.
func down(t *testing.T, a *agent, d time.Duration) {
	t.Helper()
	select {
	case <-a.done:
		t.Fatal("the agent exited during the fault")
	case <-time.After(d):
	}
}

// survives runs a fault against an agent with a Ready Bundle of five
// ConfigMaps: fault breaks the cluster and returns once it is repaired.
// Then an edit is made, which must be reverted, with the agent still
// running and no object re-created; it returns when the cluster was back
// and when the edit was made and reverted.
func survives(t *testing.T, fault func(a *agent, ns string), agentArgs ...string) (back, edited time.Time, took time.Duration) {
	t.Helper()
	ns, a := setup(t, agentArgs...)
	controllersRecover(t)
	createBundle(t, ns, "cms", configMapsBundle(ns, "cm", 5))
	waitBundle(t, ns, "cms", "Ready", ready)
	before := ownedUIDs(t, ns)
	fault(a, ns)
	back = time.Now()
	edited = editUntilAccepted(t, cp.Client(), ns, "cm-1", "intruder")
	took = revertedAfter(t, ns, "cm-1", edited)
	waitBundle(t, ns, "cms", "Ready after the fault", ready)
	sameObjects(t, ns, before)
	if a.exited() {
		t.Fatal("the agent exited")
	}
	return back, edited, took
}

// TestFaultAPIServerKilled: kube-apiserver killed (SIGKILL), down for the
// outage, and started again: the agent neither restarts nor re-creates
// objects, and an edit made after the API server is back is reverted.
func TestFaultAPIServerKilled(t *testing.T) {
	back, edited, took := survives(t, func(a *agent, _ string) {
		if err := cp.KillAPIServer(); err != nil {
			t.Fatal(err)
		}
		down(t, a, outage)
		if err := cp.StartAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("kube-apiserver killed and restarted: an edit made %.2f s after it answered was reverted %.2f s after the edit (%.2f s after recovery)",
		edited.Sub(back).Seconds(), took.Seconds(), edited.Add(took).Sub(back).Seconds())
}

// TestFaultEtcdKilled: etcd killed (SIGKILL) and started again on the same
// data: the API server answers without it, writes fail, then recover; the
// agent neither restarts nor re-creates objects, and an edit made after
// recovery is reverted.
func TestFaultEtcdKilled(t *testing.T) {
	back, edited, took := survives(t, func(a *agent, ns string) {
		if err := cp.KillEtcd(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a write refused without etcd", func() (bool, string) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := cp.Client().CoreV1().ConfigMaps(ns).Patch(ctx, "cm-0", types.MergePatchType,
				[]byte(`{"metadata":{"annotations":{"probe":"x"}}}`), metav1.PatchOptions{})
			return err != nil, "the write succeeded"
		})
		down(t, a, outage)
		if err := cp.StartEtcd(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("etcd killed and restarted: the first write was accepted %.2f s after etcd was healthy; an edit then was reverted %.2f s later (%.2f s after recovery)",
		edited.Sub(back).Seconds(), took.Seconds(), edited.Add(took).Sub(back).Seconds())
}

// TestFaultWatchesExpire: an edit lands, the API server is killed, etcd
// is compacted past every resource version the agent's informers have
// seen, and the API server starts again with a new watch cache: each
// informer lists again — after a 410 Gone when its watch resumes from a
// compacted version, or at once when its broken watch made it list (which
// one is a race; the agent's log at -v 4 shows "too old resource version"
// in some runs and not others). Neither the edit made just before the kill
// nor one made after recovery is missed.
func TestFaultWatchesExpire(t *testing.T) {
	var ns string
	var rev int64
	var before time.Time
	back, edited, took := survives(t, func(_ *agent, namespace string) {
		ns = namespace
		before = editUntilAccepted(t, cp.Client(), ns, "cm-2", "intruder")
		if err := cp.KillAPIServer(); err != nil {
			t.Fatal(err)
		}
		var err error
		if rev, err = cp.CompactEtcd(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := cp.StartAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	revertedAfter(t, ns, "cm-2", before)
	t.Logf("watches expired (etcd compacted to revision %d, API server restarted): the edit before the kill reverted; one made after recovery reverted %.2f s later (%.2f s after recovery)",
		rev, took.Seconds(), edited.Add(took).Sub(back).Seconds())
}

// TestFaultAgentKilledMidSync: the agent killed (SIGKILL) in the middle of
// the initial sync of 3 × 1,000 objects, and started again: every Bundle
// Synced and Ready, every declared object there once, nothing labelled
// for a Bundle that it does not declare.
func TestFaultAgentKilledMidSync(t *testing.T) {
	ns, first := setup(t)
	const per = 1000
	names := []string{"alpha", "beta", "gamma"}
	for _, name := range names {
		createBundle(t, ns, name, configMapsBundle(ns, name, per))
	}
	waitFor(t, "the first sync half done", func() (bool, string) {
		n := len(ownedUIDs(t, ns))
		return n >= len(names)*per/2, fmt.Sprintf("%d objects applied", n)
	})
	applied := len(ownedUIDs(t, ns))
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	if applied >= len(names)*per {
		t.Fatalf("all %d objects were applied before the kill: the sync was not interrupted", applied)
	}
	restarted := time.Now()
	a := startAgent(t, ns)
	for _, name := range names {
		waitBundle(t, ns, name, "Synced and Ready after the restart", func(b *manifests.Bundle) bool {
			return ready(b) && isTrue(b, manifests.ConditionSynced) && b.Status.Summary.Desired == per && b.Status.Summary.Ready == per
		})
	}
	t.Logf("agent killed with %d of %d objects applied; the restarted agent had every Bundle Ready %.2f s after it started",
		applied, len(names)*per, time.Since(restarted).Seconds())
	list, err := cp.Client().CoreV1().ConfigMaps(ns).List(t.Context(), metav1.ListOptions{LabelSelector: ownership.BundleLabel})
	if err != nil {
		t.Fatal(err)
	}
	declared := regexp.MustCompile(`^(alpha|beta|gamma)-(\d+)$`)
	seen := map[string]bool{}
	for _, cm := range list.Items {
		m := declared.FindStringSubmatch(cm.Name)
		if m == nil {
			t.Errorf("ConfigMap %s labelled %v: declared by no Bundle", cm.Name, cm.Labels)
			continue
		}
		if i, _ := strconv.Atoi(m[2]); i >= per || cm.Labels[ownership.BundleLabel] != ownership.BundleLabelValue(types.NamespacedName{Namespace: ns, Name: m[1]}) {
			t.Errorf("ConfigMap %s labelled %v: not declared by the Bundle it names", cm.Name, cm.Labels)
		}
		seen[cm.Name] = true
	}
	if len(seen) != len(names)*per {
		t.Errorf("%d owned ConfigMaps, want %d", len(seen), len(names)*per)
	}
	if a.exited() {
		t.Fatal("the restarted agent exited")
	}
}

// cutProxy is a TCP proxy to the API server whose connections can be cut:
// cut closes every open connection and refuses new ones until restore.
type cutProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    map[net.Conn]bool
	down     bool
	wg       sync.WaitGroup
}

func startCutProxy(t *testing.T, upstream string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut() // closes every connection, which ends their copies
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestFaultNetworkCut: the network between the agent and the API server
// cut for 30 s (every connection closed, new ones refused) and restored:
// the agent does not restart, drift made during the cut is corrected
// after it, and the status is right again.
func TestFaultNetworkCut(t *testing.T) {
	setupCRD(t)
	ns := cp.Namespace(t)
	proxy := startCutProxy(t, strings.TrimPrefix(cp.Host, "https://"))
	kubeconfig, err := os.ReadFile(cp.Kubeconfig(cluster.AdminUser))
	if err != nil {
		t.Fatal(err)
	}
	proxied := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(proxied, []byte(strings.ReplaceAll(string(kubeconfig), cp.Host, "https://"+proxy.ln.Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, ns, "--kubeconfig", proxied)
	createBundle(t, ns, "cms", configMapsBundle(ns, "cm", 5))
	b := waitBundle(t, ns, "cms", "Ready", ready)
	corrections := b.Status.DriftCorrections

	proxy.cut()
	edited := editUntilAccepted(t, cp.Client(), ns, "cm-4", "intruder")
	down(t, a, 30*time.Second-time.Since(edited))
	if cm, _ := configMap(t, ns, "cm-4"); cm == nil || cm.Data["k"] != "theirs" {
		t.Fatalf("the edit during the cut was reverted through a cut network: %v", cm)
	}
	proxy.restore()
	back := time.Now()
	took := revertedAfter(t, ns, "cm-4", back)
	t.Logf("network cut for 30 s: the drift made during the cut was reverted %.2f s after the network was restored", took.Seconds())
	waitBundle(t, ns, "cms", "Ready, the correction counted", func(b *manifests.Bundle) bool {
		return ready(b) && b.Status.DriftCorrections > corrections
	})
	if a.exited() {
		t.Fatal("the agent exited")
	}
}

// procStats reads a process's CPU time and peak RSS from /proc.
func procStats(t *testing.T, pid int) (cpu time.Duration, peakRSS int64) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	cpu = time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			peakRSS = kb << 10
		}
	}
	return cpu, peakRSS
}

// requestsByMethod sums the agent's rest_client_requests_total per method.
func requestsByMethod(t *testing.T, a *agent) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	re := regexp.MustCompile(`^rest_client_requests_total\{.*method="([A-Z]+)".*\} (\S+)$`)
	for _, l := range strings.Split(a.scrape(t), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			out[m[1]] += v
		}
	}
	return out
}

// corrections returns the Bundle's driftwatch_drift_corrections_total.
func corrections(t *testing.T, a *agent, bundle string) float64 {
	t.Helper()
	var n float64
	re := regexp.MustCompile(`^driftwatch_drift_corrections_total\{bundle="` + bundle + `",.*\} (\S+)$`)
	for _, l := range strings.Split(a.scrape(t), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			n += v
		}
	}
	return n
}

// TestFaultFlood: another manager edits owned objects as fast as it can
// (up to 1,000 edits per second) for 60 s — a fight storm. The agent's
// writes are bounded by the fight back-off, its CPU and memory stay
// bounded, and another Bundle's corrections keep working meanwhile.
func TestFaultFlood(t *testing.T) {
	ns, a := setup(t)
	const flooded = 10
	createBundle(t, ns, "flooded", configMapsBundle(ns, "flood", flooded))
	createBundle(t, ns, "calm", configMapsBundle(ns, "calm", 1))
	waitBundle(t, ns, "flooded", "Ready", ready)
	waitBundle(t, ns, "calm", "Ready", ready)

	cfg := cp.Config(cluster.AdminUser)
	cfg.QPS, cfg.Burst = 2000, 2000
	flooder := kubernetes.NewForConfigOrDie(cfg)
	// Each calm edit by another manager: three by one manager within a
	// minute would be a fight, and back off.
	calmEdits := 0
	calmEdit := func() time.Time {
		calmEdits++
		return editUntilAccepted(t, cp.Client(), ns, "calm-0", fmt.Sprintf("editor-%d", calmEdits))
	}
	var quiet []time.Duration
	for range 5 {
		quiet = append(quiet, revertedAfter(t, ns, "calm-0", calmEdit()).Round(time.Millisecond))
	}

	cpu0, _ := procStats(t, a.cmd.Process.Pid)
	req0 := requestsByMethod(t, a)
	fixes0 := corrections(t, a, "flooded")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	limiter := time.NewTicker(time.Millisecond) // 1,000 edits per second at most
	defer limiter.Stop()
	var edits, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 16 {
				select {
				case <-ctx.Done():
					return
				case <-limiter.C:
				}
				_, err := flooder.CoreV1().ConfigMaps(ns).Patch(ctx, fmt.Sprintf("flood-%d", i%flooded), types.MergePatchType,
					fmt.Appendf(nil, `{"data":{"k":"flood-%d"}}`, i), metav1.PatchOptions{FieldManager: "flooder"})
				switch {
				case err == nil:
					edits.Add(1)
				case !errors.Is(ctx.Err(), context.DeadlineExceeded):
					failed.Add(1)
				}
			}
		}()
	}
	// Edits of the calm Bundle during the flood: how long each took to
	// be reverted (a failure to revert within 90 s is reported below,
	// after the figures).
	var during []time.Duration
	var missed int
	for ctx.Err() == nil && len(during)+missed < 5 {
		edited := calmEdit()
		err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			cm, err := cp.Client().CoreV1().ConfigMaps(ns).Get(ctx, "calm-0", metav1.GetOptions{})
			return err == nil && cm.Data["k"] == "ours", nil
		})
		if err != nil {
			missed++
			continue
		}
		during = append(during, time.Since(edited).Round(time.Millisecond))
	}
	wg.Wait()
	cpu1, peak := procStats(t, a.cmd.Process.Pid)
	req1 := requestsByMethod(t, a)
	fixes := corrections(t, a, "flooded") - fixes0
	writes := req1["PATCH"] + req1["PUT"] + req1["POST"] + req1["DELETE"] - req0["PATCH"] - req0["PUT"] - req0["POST"] - req0["DELETE"]
	all := 0.0
	for m, v := range req1 {
		all += v - req0[m]
	}
	secs := 60.0
	t.Logf("flood: %d edits by another manager in %.0f s (%.0f/s, %d failed); agent: %.0f corrections of the flooded objects, %.0f writes in all (%.1f/s: corrections, status, events), %.0f requests in all (%.1f/s), CPU %.1f s (%.0f %% of a core), peak RSS %.1f MiB; a calm Bundle's edit reverted in %v before, %v during",
		edits.Load(), secs, float64(edits.Load())/secs, failed.Load(), fixes, writes, writes/secs, all, all/secs,
		(cpu1 - cpu0).Seconds(), 100*(cpu1-cpu0).Seconds()/secs, float64(peak)/(1<<20), quiet, during)

	// Bounded by the fight back-off: per flooded field, the takes before
	// the threshold (3) and one correction per doubling back-off (5 s, 10,
	// 20, 40) in 60 s. Status and event writes come on top, each
	// aggregated: a few per second in all.
	if limit := float64(flooded * (3 + 4)); fixes > limit {
		t.Errorf("the agent corrected the flooded objects %.0f times, more than the fight back-off allows (%.0f)", fixes, limit)
	}
	if writes/secs > 10 {
		t.Errorf("the agent wrote %.1f times per second in the flood", writes/secs)
	}
	if missed > 0 || len(during) == 0 {
		t.Errorf("%d of the calm Bundle's edits during the flood were not reverted within 90 s", missed)
	}
	if a.exited() {
		t.Fatal("the agent exited")
	}
	var fights []corev1.ObjectReference
	list, err := cp.Client().EventsV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "reason=FightDetected"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		fights = append(fights, e.Regarding)
	}
	if len(fights) == 0 {
		t.Error("no FightDetected event in the flood")
	}
	// Recovery: once the flood stops, the flooded objects are corrected.
	for i := range flooded {
		name := fmt.Sprintf("flood-%d", i)
		err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 6*time.Minute, true, func(ctx context.Context) (bool, error) {
			cm, err := cp.Client().CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && cm.Data["k"] == "ours", nil
		})
		if err != nil {
			t.Fatalf("%s not corrected after the flood: %v", name, err)
		}
	}
}
