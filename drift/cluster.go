package drift

import (
	"context"
	"maps"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// ClusterConfigMap, in the agent's namespace of the target cluster,
// carries labels of the cluster: merged over --cluster-label (the
// ConfigMap's win), watched, so that a label change renders every Bundle
// again — and writes only the objects whose result changed.
const ClusterConfigMap = ownership.ClusterConfigMap

// clusterSyncTimeout bounds the wait for the ConfigMap's first list.
const clusterSyncTimeout = time.Minute

// cluster returns the cluster Bundles are rendered for now.
func (c *Controller) cluster() manifests.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clusterNow
}

// watchCluster starts the watch of ClusterConfigMap and waits for its
// first list, so that the first syncs see the cluster's labels. Without
// a target metadata client the flags' labels are all there is.
func (c *Controller) watchCluster(ctx context.Context, wg interface{ Go(func()) }) {
	c.mu.Lock()
	c.clusterNow = c.opts.Cluster
	c.mu.Unlock()
	if c.opts.TargetMetadata == nil {
		return
	}
	inf := c.namedInformer(readResources["ConfigMap"], c.opts.ParentNamespace, ClusterConfigMap)
	set := func(obj any) {
		var l map[string]string
		if m, ok := obj.(metav1.Object); ok {
			l = m.GetLabels()
		}
		c.setClusterLabels(l)
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(any) { c.setClusterLabels(nil) },
	})
	wg.Go(func() { inf.RunWithContext(ctx) })
	syncCtx, cancel := context.WithTimeout(ctx, clusterSyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		c.logger.Info("The cluster ConfigMap could not be listed in time; rendering with the flags' labels until it is", "configmap", c.opts.ParentNamespace+"/"+ClusterConfigMap)
	}
}

// setClusterLabels makes the cluster's labels the flags' with extra laid
// over them and, when that changes them, syncs every Bundle.
func (c *Controller) setClusterLabels(extra map[string]string) {
	cluster := c.opts.Cluster.WithLabels(extra)
	labels := cluster.Labels
	c.mu.Lock()
	changed := !maps.Equal(labels, c.clusterNow.Labels)
	c.clusterNow = cluster
	c.mu.Unlock()
	if !changed || !c.synced.Load() {
		return
	}
	c.logger.Info("Cluster labels changed; rendering every Bundle again", "labels", labels)
	for _, obj := range c.src.Load().bundles.List() {
		if m, ok := obj.(metav1.Object); ok {
			c.queue.Add(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
		}
	}
}
