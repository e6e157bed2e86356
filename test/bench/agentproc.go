package main

// The agent under test: the driftwatch binary built from the checkout, a
// separate process whose memory (/proc), CPU time (/proc) and Go heap (its
// /metrics) are read from outside.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"k8s.io/client-go/rest"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// agentProc is a running agent.
type agentProc struct {
	cmd         *exec.Cmd
	metricsPort int
	healthPort  int
	logPath     string
	done        chan struct{} // closed once the process has exited
	err         error         // its exit status, read after done
}

// startAgent runs bin as an agent of user alice against c, watching
// Bundles in bundleNamespace, its output in logPath; args are added to the
// agent's (a flag given again overrides).
func startAgent(c *cluster.Cluster, bin, logPath, extraEnv string, args ...string) (*agentProc, error) {
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	a := &agentProc{metricsPort: ports[0], healthPort: ports[1], logPath: logPath, done: make(chan struct{})}
	a.cmd = exec.Command(bin, "agent", "--kubeconfig", c.Kubeconfig(agentUser), "--namespace", bundleNamespace,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", a.metricsPort),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort), "--profiling")
	a.cmd.Args = append(a.cmd.Args, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.Env = os.Environ()
	if extraEnv != "" {
		a.cmd.Env = append(a.cmd.Env, strings.Split(extraEnv, ",")...)
	}
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting the agent %s: %w", bin, err)
	}
	go func() {
		a.err = a.cmd.Wait()
		logFile.Close()
		close(a.done)
	}()
	return a, nil
}

// exited returns an error if the agent is no longer running.
func (a *agentProc) exited() error {
	select {
	case <-a.done:
		return fmt.Errorf("the agent exited (%v); its log: %s", a.err, a.logPath)
	default:
		return nil
	}
}

// waitReady waits until the agent answers /readyz.
func (a *agentProc) waitReady(ctx context.Context) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", a.healthPort)
	return wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := a.exited(); err != nil {
			return false, err
		}
		resp, err := http.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// stop sends SIGTERM and waits for the agent to exit, then kills it.
func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM) // it may have exited already
	select {
	case <-a.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = a.cmd.Process.Kill()
	<-a.done
}

// memory is a process's resident set and Go heap.
type memory struct {
	RSS  float64 `json:"rss_bytes"`
	Anon float64 `json:"rss_anon_bytes"` // RSS without the binary's pages
	Heap float64 `json:"heap_alloc_bytes"`
}

// memory reads the agent's RSS and its go_memstats_heap_alloc_bytes; a
// figure that cannot be read is an error.
func (a *agentProc) memory() (memory, error) {
	rss, err := procRSS(a.cmd.Process.Pid)
	if err != nil {
		return memory{}, err
	}
	heap, err := a.scrape("go_memstats_heap_alloc_bytes")
	if err != nil {
		return memory{}, err
	}
	anon, err := procStatus(a.cmd.Process.Pid, "RssAnon:")
	if err != nil {
		return memory{}, err
	}
	return memory{RSS: rss, Anon: anon, Heap: heap}, nil
}

// cpu returns the CPU seconds (user and system) the agent has used.
func (a *agentProc) cpu() (float64, error) { return procCPU(a.cmd.Process.Pid) }

// scrape reads one unlabelled sample from the agent's /metrics.
func (a *agentProc) scrape(name string) (float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", a.metricsPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in the agent's /metrics", name)
}

// memBreakdown reads the agent's Go memory statistics from /metrics.
func (a *agentProc) memBreakdown() string {
	mib := func(name string) float64 { v, _ := a.scrape(name); return v / (1 << 20) }
	gc, _ := a.scrape("go_gc_duration_seconds_count")
	return fmt.Sprintf("heap in use %.1f MiB, idle %.1f MiB (released %.1f), stacks %.1f MiB, runtime other %.1f MiB, obtained from OS %.1f MiB, GC cycles %.0f",
		mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_idle_bytes"), mib("go_memstats_heap_released_bytes"),
		mib("go_memstats_stack_inuse_bytes"), mib("go_memstats_other_sys_bytes")+mib("go_memstats_gc_sys_bytes")+mib("go_memstats_mspan_sys_bytes"),
		mib("go_memstats_sys_bytes"), gc)
}

// fetch saves the body of url (the agent's heap profile) to path.
// profileCPU starts fetching a CPU profile of the agent over the next
// seconds into path; wait returns once it is written. Without a path it
// does nothing.
func (a *agentProc) profileCPU(seconds float64, path string) (wait func() error) {
	if path == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		done <- fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", a.metricsPort, int(math.Ceil(seconds))), path)
	}()
	return func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("CPU profile: %w", err)
		}
		logf("CPU profile of the agent in %s", path)
		return nil
	}
}

// profileAPIServer starts fetching a CPU profile of c's kube-apiserver
// over the next seconds into path (as profileCPU). The API server
// serves /debug/pprof to its admin (--profiling is on by default).
func profileAPIServer(c *cluster.Cluster, seconds float64, path string) (wait func() error) {
	if path == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		client, err := rest.HTTPClientFor(c.Config(cluster.AdminUser))
		if err != nil {
			done <- err
			return
		}
		done <- fetchWith(client, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", c.Host, int(math.Ceil(seconds))), path)
	}()
	return func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("kube-apiserver CPU profile: %w", err)
		}
		logf("CPU profile of kube-apiserver in %s", path)
		return nil
	}
}

func fetch(url, path string) error { return fetchWith(http.DefaultClient, url, path) }

func fetchWith(client *http.Client, url, path string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// procRSS reads VmRSS of a process, in bytes.
func procRSS(pid int) (float64, error) { return procStatus(pid, "VmRSS:") }

// procStatus reads a kB field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no " + field + " in /proc/" + strconv.Itoa(pid) + "/status")
}
