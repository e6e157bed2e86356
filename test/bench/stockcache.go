package main

// Baseline "stock cache": what holding the agent's owned objects costs with
// a stock informer. The benchmark re-executes itself with the hidden flag
// -stock-cache-child, so that the cache's RSS is that of a process of its
// own: the child syncs a dynamic (unstructured) informer — or, for
// reference, a metadata-only one — over the ConfigMaps and Deployments
// labelled driftwatch.io/bundle, collects garbage, returns freed memory to
// the OS, and prints its RSS and heap as JSON.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// stockCacheFlag is the hidden flag that makes the binary the child.
const stockCacheFlag = "-stock-cache-child"

// ownedSelector selects the agent's owned objects.
const ownedSelector = "driftwatch.io/bundle"

var deploymentGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

// stockCache is what a child reports.
type stockCache struct {
	Mode        string  `json:"mode"`
	Objects     int     `json:"objects"`
	SyncSeconds float64 `json:"sync_seconds"`
	RSS         float64 `json:"rss_bytes"`
	// Anon is the anonymous part of RSS: the process's own memory, not
	// the pages of its binary.
	Anon float64 `json:"rss_anon_bytes"`
	Heap float64 `json:"heap_alloc_bytes"`
}

// measureStockCache runs the child for mode ("dynamic" or "metadata")
// against the cluster of kubeconfig.
func measureStockCache(ctx context.Context, kubeconfig, mode string) (stockCache, error) {
	self, err := os.Executable()
	if err != nil {
		return stockCache{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, stockCacheFlag, "-mode", mode, "-kubeconfig", kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return stockCache{}, fmt.Errorf("stock cache (%s): %w: %s", mode, err, stderr.String())
	}
	var r stockCache
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return stockCache{}, fmt.Errorf("stock cache (%s): %w in %q", mode, err, stdout.String())
	}
	if r.RSS == 0 || r.Heap == 0 {
		return stockCache{}, fmt.Errorf("stock cache (%s): no memory figures in %q", mode, stdout.String())
	}
	return r, nil
}

// stockCacheChild is the child's main.
func stockCacheChild(args []string) int {
	fs := flag.NewFlagSet("stock-cache-child", flag.ContinueOnError)
	mode := fs.String("mode", "dynamic", "dynamic or metadata")
	kubeconfig := fs.String("kubeconfig", "", "cluster to read")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	r, err := runStockCache(*kubeconfig, *mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stock cache child:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "stock cache child:", err)
		return 1
	}
	return 0
}

func runStockCache(kubeconfig, mode string) (stockCache, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return stockCache{}, err
	}
	cfg.QPS, cfg.Burst = -1, 0
	ctx, cancel := context.WithCancel(context.Background())
	var shutdown func()
	defer func() {
		// Stop the informers before waiting for them.
		cancel()
		if shutdown != nil {
			shutdown()
		}
	}()
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = ownedSelector }
	var infs []informers.GenericInformer
	start := time.Now()
	switch mode {
	case "dynamic":
		f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dynamic.NewForConfigOrDie(cfg), 0, "", tweak)
		infs = []informers.GenericInformer{f.ForResource(cmGVR), f.ForResource(deploymentGVR)}
		f.Start(ctx.Done())
		shutdown = f.Shutdown
	case "metadata":
		f := metadatainformer.NewFilteredSharedInformerFactory(metadata.NewForConfigOrDie(cfg), 0, "", tweak)
		infs = []informers.GenericInformer{f.ForResource(cmGVR), f.ForResource(deploymentGVR)}
		f.Start(ctx.Done())
		shutdown = f.Shutdown
	default:
		return stockCache{}, fmt.Errorf("unknown mode %q", mode)
	}
	for _, inf := range infs {
		if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
			return stockCache{}, fmt.Errorf("%s informer did not sync", mode)
		}
	}
	r := stockCache{Mode: mode, SyncSeconds: time.Since(start).Seconds()}
	for _, inf := range infs {
		r.Objects += len(inf.Informer().GetStore().ListKeys())
	}
	// The cache at rest: no garbage, and freed pages given back, which is
	// the best RSS this cache can have.
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.Heap = float64(ms.HeapAlloc)
	if r.RSS, err = procRSS(os.Getpid()); err != nil {
		return stockCache{}, err
	}
	if r.Anon, err = procStatus(os.Getpid(), "RssAnon:"); err != nil {
		return stockCache{}, err
	}
	// Keep the caches reachable until measured.
	runtime.KeepAlive(infs)
	return r, nil
}
