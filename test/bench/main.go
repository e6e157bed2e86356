// Command bench measures the driftwatch agent, built from this checkout and
// run as a separate process on a local control plane of its own: initial
// sync of N ConfigMaps, edit → reverted latency, the agent's memory, and the
// write requests of a re-sync of unchanged Bundles.
//
// This is the core figures only; baselines (floor, ceiling, kubectl, stock
// cache) and the scale sweep are the benchmark issue's work.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/test/cluster"
)

func main() {
	objects := flag.Int("objects", 10000, "ConfigMaps to own")
	perBundle := flag.Int("per-bundle", 1000, "ConfigMaps per Bundle")
	edits := flag.Int("edits", 100, "out-of-band edits to time")
	agentBin := flag.String("agent", "bin/driftwatch", "the driftwatch binary")
	flag.StringVar(&heapProfile, "heap-profile", "", "write the agent's heap profile at steady state to this file")
	flag.DurationVar(&idle, "idle", 0, "after the edits, leave the agent idle this long and measure its memory again (steady state)")
	flag.StringVar(&agentEnv, "agent-env", "", "extra environment of the agent, comma-separated K=V (e.g. GOMEMLIMIT=48MiB)")
	flag.Parse()
	if err := run(*objects, *perBundle, *edits, *agentBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(objects, perBundle, edits int, agentBin string) error {
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{Log: os.Stderr})
	if err != nil {
		return err
	}
	defer c.Stop()
	cfg := c.Config(cluster.AdminUser)
	dyn := dynamic.NewForConfigOrDie(cfg)
	kube := kubernetes.NewForConfigOrDie(cfg)
	crd := manifests.CRD()
	if _, err := dyn.Resource(schemaCRD).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "bench"}); err != nil {
		return err
	}
	const ns = "bench"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}

	ports, err := cluster.FreePorts(1)
	if err != nil {
		return err
	}
	port := ports[0]
	logFile, err := os.Create(filepath.Join(c.Dir, "logs", "driftwatch.log"))
	if err != nil {
		return err
	}
	agent := exec.Command(agentBin, "agent", "--kubeconfig", c.Kubeconfig(cluster.AdminUser), "--namespace", ns,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port), "--health-probe-bind-address", "127.0.0.1:0", "--profiling")
	agent.Stdout, agent.Stderr = logFile, logFile
	agent.Env = os.Environ()
	if agentEnv != "" {
		agent.Env = append(agent.Env, strings.Split(agentEnv, ",")...)
	}
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()

	// 1. Initial sync.
	bundles := (objects + perBundle - 1) / perBundle
	start := time.Now()
	for b := 0; b < bundles; b++ {
		var sb strings.Builder
		for i := b * perBundle; i < min((b+1)*perBundle, objects); i++ {
			fmt.Fprintf(&sb, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%05d}\ndata: {key: value-%d}\n---\n", i, i)
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "driftwatch.io/v1alpha1", "kind": "Bundle",
			"metadata": map[string]any{"name": fmt.Sprintf("b%02d", b), "namespace": ns},
			"spec": map[string]any{"defaultNamespace": ns,
				"resources": []any{map[string]any{"name": "cms.yaml", "content": sb.String()}}},
		}}
		if _, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := waitAllReady(ctx, dyn, ns, bundles, objects); err != nil {
		return err
	}
	syncTime := time.Since(start)
	cpu := agentCPU(agent.Process.Pid)
	fmt.Printf("initial sync: %d ConfigMaps in %d bundles: %.1f s, %.0f objects/s, agent CPU %.1f s\n",
		objects, bundles, syncTime.Seconds(), float64(objects)/syncTime.Seconds(), cpu)

	// 2. Memory at steady state.
	rss := agentRSS(agent.Process.Pid)
	heap := scrapeValue(port, "go_memstats_heap_alloc_bytes")
	if heapProfile != "" {
		if err := fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", port), heapProfile); err != nil {
			return err
		}
	}
	fmt.Printf("memory: RSS %.1f MiB, heap %.1f MiB, %.0f B RSS per object\n", rss/(1<<20), heap/(1<<20), rss/float64(objects))
	fmt.Println("  " + memBreakdown(port))

	// 3. Writes during a re-sync of unchanged bundles: bump every
	// Bundle's generation without changing what it declares.
	before, err := apiWrites(c, cfg.BearerToken)
	if err != nil {
		return err
	}
	for b := 0; b < bundles; b++ {
		_, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).Patch(ctx, fmt.Sprintf("b%02d", b), types.MergePatchType,
			[]byte(`{"spec":{"paused":false}}`), metav1.PatchOptions{})
		if err != nil {
			return err
		}
	}
	if err := waitAllReady(ctx, dyn, ns, bundles, objects); err != nil {
		return err
	}
	after, err := apiWrites(c, cfg.BearerToken)
	if err != nil {
		return err
	}
	fmt.Printf("re-sync of %d unchanged bundles: %d write requests to configmaps (before %d, after %d; the bundle patches themselves are not counted)\n",
		bundles, after-before, before, after)

	// 4. Edit → reverted, one at a time, seen by our own watch.
	w, err := kube.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "driftwatch.io/bundle"})
	if err != nil {
		return err
	}
	defer w.Stop()
	var lat []time.Duration
	for i := 0; i < edits; i++ {
		n := (i * 7919) % objects
		name := fmt.Sprintf("cm-%05d", n)
		t0 := time.Now()
		_, err := kube.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(`{"data":{"key":"edited"}}`),
			metav1.PatchOptions{FieldManager: "bench-edit"})
		if err != nil {
			return err
		}
		t1 := time.Now()
		if err := waitRestored(w, name, fmt.Sprintf("value-%d", n)); err != nil {
			return err
		}
		lat = append(lat, time.Since(t1))
		_ = t0
	}
	fmt.Printf("memory after the edits: RSS %.1f MiB, heap %.1f MiB, agent CPU %.1f s in all\n",
		agentRSS(agent.Process.Pid)/(1<<20), scrapeValue(port, "go_memstats_heap_alloc_bytes")/(1<<20), agentCPU(agent.Process.Pid))
	fmt.Println("  " + memBreakdown(port))
	if idle > 0 {
		// A measurement window, not a synchronisation: the runtime gives
		// memory back to the OS gradually after the peaks of full syncs.
		<-time.After(idle)
		fmt.Printf("memory after %s idle: RSS %.1f MiB, heap %.1f MiB, agent CPU %.1f s in all\n", idle,
			agentRSS(agent.Process.Pid)/(1<<20), scrapeValue(port, "go_memstats_heap_alloc_bytes")/(1<<20), agentCPU(agent.Process.Pid))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("edit → reverted (%d edits, from the edit's response to our watch seeing the value back): p50 %s, p90 %s, p99 %s, max %s\n",
		len(lat), q(.5).Round(10*time.Microsecond), q(.9).Round(10*time.Microsecond), q(.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}

var (
	schemaCRD   = manifestsCRDGVR()
	heapProfile string
	agentEnv    string
	idle        time.Duration
)

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func waitAllReady(ctx context.Context, dyn dynamic.Interface, ns string, bundles, objects int) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := dyn.Resource(manifests.BundleGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != bundles {
			return false, nil
		}
		total := 0
		for _, b := range list.Items {
			gen := b.GetGeneration()
			og, _, _ := unstructured.NestedInt64(b.Object, "status", "observedGeneration")
			ready, _, _ := unstructured.NestedInt64(b.Object, "status", "summary", "ready")
			if og != gen {
				return false, nil
			}
			total += int(ready)
		}
		return total == objects, nil
	})
}

func waitRestored(w watch.Interface, name, value string) error {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch closed")
			}
			cm, isCM := ev.Object.(*corev1.ConfigMap)
			if isCM && cm.Name == name && cm.Data["key"] == value {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("%s not restored within 30 s", name)
		}
	}
}

// apiWrites reads the API server's count of write requests to configmaps.
func apiWrites(c *cluster.Cluster, token string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, c.Host+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(c)}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "apiserver_request_total{") || !strings.Contains(l, `resource="configmaps"`) {
			continue
		}
		for _, verb := range []string{"APPLY", "PATCH", "POST", "PUT", "DELETE"} {
			if strings.Contains(l, `verb="`+verb+`"`) {
				v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				total += int(v)
			}
		}
	}
	return total, sc.Err()
}

func scrapeValue(port int, name string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(l, name+" "), 64)
			return v
		}
	}
	return 0
}

// memBreakdown reads the agent's Go memory statistics from /metrics.
func memBreakdown(port int) string {
	mib := func(name string) float64 { return scrapeValue(port, name) / (1 << 20) }
	return fmt.Sprintf("heap in use %.1f MiB, idle %.1f MiB (released %.1f), stacks %.1f MiB, runtime other %.1f MiB, obtained from OS %.1f MiB, GC cycles %.0f",
		mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_idle_bytes"), mib("go_memstats_heap_released_bytes"),
		mib("go_memstats_stack_inuse_bytes"), mib("go_memstats_other_sys_bytes")+mib("go_memstats_gc_sys_bytes")+mib("go_memstats_mspan_sys_bytes"),
		mib("go_memstats_sys_bytes"), scrapeValue(port, "go_gc_duration_seconds_count"))
}

func agentRSS(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

func agentCPU(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}
