// Package cluster runs a real, local Kubernetes control plane for tests:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake
// nodes and pods), each a child process on free loopback ports, built once by
// tools/build.sh from the Go module proxy. Authentication is by static tokens
// (one admin, several unprivileged users), authorisation is RBAC, and a
// ServiceAccount signing key makes ServiceAccount tokens and impersonation
// work, so that server-side apply, managedFields, RBAC denials and status
// subresources behave exactly as in a production cluster.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// AdminUser is in system:masters: it may do anything.
	AdminUser = "admin"
	// serviceIP is the first address of the service range: the
	// "kubernetes" Service in the default namespace.
	serviceIP = "10.0.0.1"
	// kwokNodeAnnotation marks the nodes that kwok manages.
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
)

// UnprivilegedUsers are users that authenticate but hold no RBAC rights
// until a test grants them some.
var UnprivilegedUsers = []string{"alice", "bob"}

// Options configure a control plane.
type Options struct {
	// BinDir holds the binaries. Empty means: run tools/build.sh, which
	// builds them on first use and prints the cache directory.
	BinDir string
	// Nodes is the number of kwok nodes to create (default 1).
	Nodes int
	// Dir is where data, certificates, kubeconfigs and logs go. Empty
	// means a new temporary directory, removed by Stop unless KeepDir.
	Dir string
	// KeepDir keeps Dir after Stop.
	KeepDir bool
	// APIServerArgs are appended to kube-apiserver's flags.
	APIServerArgs []string
	// APIServerOnly starts etcd and kube-apiserver only: an upstream
	// (management) cluster that holds Bundles runs no workloads.
	APIServerOnly bool
	// Users are more users without rights, beside UnprivilegedUsers, each
	// with a token and a kubeconfig.
	Users []string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Cluster is a running control plane.
type Cluster struct {
	// Host is the API server's URL.
	Host string
	// Dir holds data, kubeconfigs and the components' logs (Dir/logs).
	Dir string
	// BinDir holds etcd, kube-apiserver, …, kubectl, helm, kwok.
	BinDir string
	// StartDuration is how long Start took, from the first process started
	// to every node Ready and schedulable.
	StartDuration time.Duration

	opts   Options
	caPEM  []byte
	tokens map[string]string // user → bearer token
	users  map[string]string // user → kubeconfig path
	admin  *kubernetes.Clientset

	// apiArgs and apiserver are the API server's flags and process, for
	// StopAPIServer and StartAPIServer.
	apiArgs   []string
	apiserver *process
	// etcdArgs, etcdURL and etcd: for KillEtcd and StartEtcd.
	etcdArgs []string
	etcdURL  string
	etcd     *process

	mu    sync.Mutex
	procs []*process // in start order; stopped in reverse
}

// Start brings up etcd, the API server, the controller manager, the
// scheduler and kwok, creates the kwok nodes and returns once every node is
// Ready and free of the not-ready taint. On error everything already started
// is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = BuildBinaries(ctx, opts.Log); err != nil {
			return nil, err
		}
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "driftwatch-cluster-"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: opts.Dir, BinDir: opts.BinDir, opts: opts,
		tokens: map[string]string{}, users: map[string]string{}}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.logTails(25))
			_ = c.Stop() // the start error is the one to report
		}
	}()
	started := time.Now()
	for _, d := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	p, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return nil, err
	}
	c.caPEM = p.caPEM

	ports, err := FreePorts(4)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.Host = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	c.etcdURL = etcdURL
	c.etcdArgs = []string{"--name=default", "--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + etcdPeer, "--initial-advertise-peer-urls=" + etcdPeer,
		"--initial-cluster=default=" + etcdPeer,
		// Test data is disposable: fsync only slows every write.
		"--unsafe-no-fsync", "--quota-backend-bytes=8589934592",
		"--log-level=warn"}
	etcd, err := c.start("etcd", c.etcdArgs...)
	if err != nil {
		return nil, err
	}
	c.etcd = etcd
	if err := waitHTTP(ctx, etcd, http.DefaultClient, etcdURL+"/health", "", `"health":"true"`); err != nil {
		return nil, fmt.Errorf("etcd not healthy: %w", err)
	}

	if err := c.writeTokens(); err != nil {
		return nil, err
	}
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		// A loopback address cannot back the kubernetes Service endpoints.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + filepath.Join(c.Dir, "pki"),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.caCert,
		"--token-auth-file=" + filepath.Join(c.Dir, "pki", "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=10.0.0.0/16",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	c.apiArgs = append(apiArgs, opts.APIServerArgs...)
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	if c.admin, err = kubernetes.NewForConfig(c.Config(AdminUser)); err != nil {
		return nil, err
	}
	if opts.APIServerOnly {
		c.StartDuration = time.Since(started)
		fmt.Fprintf(opts.Log, "API server ready in %.1f s at %s (logs in %s)\n",
			c.StartDuration.Seconds(), c.Host, filepath.Join(c.Dir, "logs"))
		return c, nil
	}

	kcmConfig, err := c.writeKubeconfig("system:kube-controller-manager")
	if err != nil {
		return nil, err
	}
	schedConfig, err := c.writeKubeconfig("system:kube-scheduler")
	if err != nil {
		return nil, err
	}
	kcm, err := c.start("kube-controller-manager",
		"--kubeconfig="+kcmConfig, "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file="+p.saKey,
		"--root-ca-file="+p.caCert,
		"--cluster-signing-cert-file="+p.caCert, "--cluster-signing-key-file="+p.caKey,
		// The node-lifecycle controller lifts the not-ready taint; check often.
		"--node-monitor-period=1s",
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--v=1")
	if err != nil {
		return nil, err
	}
	sched, err := c.start("kube-scheduler",
		"--kubeconfig="+schedConfig, "--leader-elect=false", "--secure-port=0", "--v=1")
	if err != nil {
		return nil, err
	}
	stages := filepath.Join(c.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, []byte(kwokStages()), 0o644); err != nil {
		return nil, err
	}
	kwokConfig, err := c.writeKubeconfig("system:kwok-controller")
	if err != nil {
		return nil, err
	}
	kwok, err := c.start("kwok", "--kubeconfig="+kwokConfig, "--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"=fake",
		"--server-address=127.0.0.1:"+strconv.Itoa(ports[3]),
		"--node-lease-duration-seconds=40",
		"--cidr=10.244.0.0/16", "--node-ip=10.0.255.1")
	if err != nil {
		return nil, err
	}

	for i := 0; i < opts.Nodes; i++ {
		if err := c.createNode(ctx, fmt.Sprintf("kwok-node-%d", i)); err != nil {
			return nil, err
		}
	}
	watched := []*process{etcd, c.apiserver, kcm, sched, kwok}
	if err := c.waitNodesReady(ctx, watched); err != nil {
		return nil, err
	}
	c.StartDuration = time.Since(started)
	fmt.Fprintf(opts.Log, "control plane ready in %.1f s at %s (logs in %s)\n",
		c.StartDuration.Seconds(), c.Host, filepath.Join(c.Dir, "logs"))
	return c, nil
}

// Stop stops every component, newest first, and removes Dir unless the
// options keep it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.opts.KeepDir && c.Dir != "" && len(errs) == 0 {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on
// the same port and data, with the token file as it is now, and returns
// once it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	apiserver, err := c.start("kube-apiserver", c.apiArgs...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.apiserver = apiserver
	c.mu.Unlock()
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.certPool()}}}
	if err := waitHTTP(ctx, apiserver, tlsClient, c.Host+"/readyz", c.tokens[AdminUser], "ok"); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	return nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL); etcd and the
// data stay. Clients get connection errors until StartAPIServer.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.procs = slices.DeleteFunc(c.procs, func(q *process) bool { return q == p })
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop(15 * time.Second)
}

// KillAPIServer kills kube-apiserver with SIGKILL, as a crash would, and
// returns once it is reaped; StartAPIServer starts it again.
func (c *Cluster) KillAPIServer() error {
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.mu.Unlock()
	return c.kill(p)
}

// KillEtcd kills etcd with SIGKILL; StartEtcd starts it again on the same
// data.
func (c *Cluster) KillEtcd() error {
	c.mu.Lock()
	p := c.etcd
	c.etcd = nil
	c.mu.Unlock()
	return c.kill(p)
}

// StartEtcd starts etcd (again, after KillEtcd) on the same data and
// port, and returns once it is healthy.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	etcd, err := c.start("etcd", c.etcdArgs...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.etcd = etcd
	c.mu.Unlock()
	return waitHTTP(ctx, etcd, http.DefaultClient, c.etcdURL+"/health", "", `"health":"true"`)
}

// CompactEtcd compacts etcd's history up to its current revision (through
// etcd's JSON gateway) and returns that revision: watches from an older
// resource version then get 410 Gone.
func (c *Cluster) CompactEtcd(ctx context.Context) (int64, error) {
	post := func(path, body string, out any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.etcdURL+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, b)
		}
		return json.Unmarshal(b, out)
	}
	var status struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := post("/v3/kv/range", `{"key":"AA=="}`, &status); err != nil {
		return 0, err
	}
	rev, err := strconv.ParseInt(status.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision %q: %w", status.Header.Revision, err)
	}
	var done struct{}
	if err := post("/v3/kv/compaction", fmt.Sprintf(`{"revision":"%d","physical":true}`, rev), &done); err != nil {
		return 0, err
	}
	return rev, nil
}

// kill SIGKILLs a component and forgets it.
func (c *Cluster) kill(p *process) error {
	if p == nil {
		return nil
	}
	c.mu.Lock()
	c.procs = slices.DeleteFunc(c.procs, func(q *process) bool { return q == p })
	c.mu.Unlock()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // ESRCH: already gone
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New(p.name + " did not exit after SIGKILL")
	}
}

// RotateToken gives user a new bearer token and revokes the old one: the
// static token file is rewritten and the API server restarted on it (it
// reads the file only when it starts). It returns the new token.
func (c *Cluster) RotateToken(ctx context.Context, user string) (string, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	token := hex.EncodeToString(tok)
	c.mu.Lock()
	c.tokens[user] = token
	c.mu.Unlock()
	if err := c.writeTokenFile(); err != nil {
		return "", err
	}
	if err := c.StopAPIServer(); err != nil {
		return "", err
	}
	return token, c.StartAPIServer(ctx)
}

// Token returns the bearer token of a user.
func (c *Cluster) Token(user string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[user]
}

// CACert returns the path of the CA certificate that signs the API
// server's serving certificate.
func (c *Cluster) CACert() string { return filepath.Join(c.Dir, "pki", "ca.crt") }

// KeepDir makes Stop leave Dir (data and logs) in place.
func (c *Cluster) KeepDir() { c.opts.KeepDir = true }

// Pids returns the process IDs of the running components.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := make([]int, 0, len(c.procs))
	for _, p := range c.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// Bin returns the path of one of the built binaries: "kubectl", "helm", ….
func (c *Cluster) Bin(name string) string { return filepath.Join(c.BinDir, name) }

// Config returns a client configuration that authenticates as user, without
// client-side rate limits (tests and benchmarks measure the server).
func (c *Cluster) Config(user string) *rest.Config {
	return &rest.Config{
		Host:            c.Host,
		BearerToken:     c.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             -1,
	}
}

// Kubeconfig returns the path of a kubeconfig file that authenticates as
// user ("admin" or one of UnprivilegedUsers).
func (c *Cluster) Kubeconfig(user string) string { return c.users[user] }

// Client returns a typed clientset for the admin user.
func (c *Cluster) Client() *kubernetes.Clientset { return c.admin }

func (c *Cluster) start(name string, args ...string) (*process, error) {
	p, err := startProcess(name, c.Bin(name), args, filepath.Join(c.Dir, "logs"))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// writeTokens writes the static token file: an admin in system:masters, the
// components (also system:masters: their own authorisation is not under
// test), and the unprivileged users, then a kubeconfig for every user.
func (c *Cluster) writeTokens() error {
	for _, u := range c.allUsers() {
		tok := make([]byte, 16)
		if _, err := rand.Read(tok); err != nil {
			return err
		}
		c.tokens[u] = hex.EncodeToString(tok)
	}
	if err := c.writeTokenFile(); err != nil {
		return err
	}
	for _, u := range append(append([]string{AdminUser}, UnprivilegedUsers...), c.opts.Users...) {
		if _, err := c.writeKubeconfig(u); err != nil {
			return err
		}
	}
	return nil
}

// masters are the users in system:masters: the admin and the components
// (their own authorisation is not under test).
var masters = []string{AdminUser, "system:kube-controller-manager", "system:kube-scheduler", "system:kwok-controller"}

// allUsers are the users of the token file.
func (c *Cluster) allUsers() []string {
	return append(append(slices.Clone(masters), UnprivilegedUsers...), c.opts.Users...)
}

// writeTokenFile writes the static token file from c.tokens.
func (c *Cluster) writeTokenFile() error {
	var b strings.Builder
	c.mu.Lock()
	for _, u := range c.allUsers() {
		groups := ""
		if slices.Contains(masters, u) {
			groups = "system:masters"
		}
		fmt.Fprintf(&b, "%s,%s,%s,%q\n", c.tokens[u], u, u, groups)
	}
	c.mu.Unlock()
	return os.WriteFile(filepath.Join(c.Dir, "pki", "tokens.csv"), []byte(b.String()), 0o600)
}

func (c *Cluster) writeKubeconfig(user string) (string, error) {
	path := filepath.Join(c.Dir, strings.ReplaceAll(user, ":", "-")+".kubeconfig")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: driftwatch-test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: %s
  context: {cluster: driftwatch-test, user: %s}
current-context: %s
`, c.Host, filepath.Join(c.Dir, "pki", "ca.crt"), user, c.tokens[user], user, user, user)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return "", err
	}
	c.users[user] = path
	return path, nil
}

func (c *Cluster) certPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	return pool
}

func (c *Cluster) createNode(ctx context.Context, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("5000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
				"kubernetes.io/arch": "amd64", "type": "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	_, err := c.admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	return nil
}

// waitNodesReady waits until every node is Ready and no longer tainted
// not-ready (the node-lifecycle controller of kube-controller-manager lifts
// the taint), failing early if a component exits.
func (c *Cluster) waitNodesReady(ctx context.Context, procs []*process) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if ok, err := p.exited(); ok {
				return false, err
			}
		}
		nodes, err := c.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, n := range nodes.Items {
			if !nodeReady(&n) {
				last = fmt.Sprintf("node %s not Ready (taints %v)", n.Name, n.Spec.Taints)
				return false, nil
			}
		}
		return len(nodes.Items) == c.opts.Nodes, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for nodes (%s): %w", last, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Namespace creates a namespace for one test and waits for its default
// ServiceAccount (without it, the ServiceAccount admission plugin rejects
// pods). The namespace is deleted when the test ends.
func (c *Cluster) Namespace(t interface {
	Helper()
	Name() string
	Cleanup(func())
	Fatalf(string, ...any)
}) string {
	t.Helper()
	ctx := context.Background()
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix) // crypto/rand.Read does not fail on Linux
	name = strings.Trim(name, "-") + "-" + hex.EncodeToString(suffix)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		err := c.admin.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("deleting namespace %s: %v", name, err)
		}
	})
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.admin.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: default ServiceAccount never appeared: %v", name, err)
	}
	return name
}

// ControllersAnswer waits until the controllers work again after a fault
// (a namespace gets its default ServiceAccount from the controller
// manager, whose informers back off while the API server or etcd is
// away), so that the next test finds a working cluster.
func (c *Cluster) ControllersAnswer(ctx context.Context, timeout time.Duration) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}}
	ns, err := c.admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	defer func() {
		_ = c.admin.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns.Name, metav1.DeleteOptions{})
	}()
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := c.admin.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// logTails returns the last n lines of every component's log.
func (c *Cluster) logTails(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "----- %s (last %d lines of %s) -----\n%s\n", p.name, n, p.logPath, p.tail(n))
	}
	return b.String()
}

// waitHTTP polls url until it answers 200 with a body containing want, or
// the process exits.
func waitHTTP(ctx context.Context, p *process, client *http.Client, url, token, want string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if ok, err := p.exited(); ok {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), want), nil
	})
	if err != nil {
		return fmt.Errorf("%s: last answer %q: %w", url, last, err)
	}
	return nil
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
