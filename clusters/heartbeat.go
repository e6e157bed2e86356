package clusters

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/applyconfigurations/coordination/v1"
	"k8s.io/klog/v2"
)

// Annotations of the heartbeat Lease.
const (
	VersionAnnotation       = "driftwatch.io/agent-version"
	ClusterLabelsAnnotation = "driftwatch.io/cluster-labels"
)

// HeartbeatOptions say where the agent shows the source cluster that it is
// alive.
type HeartbeatOptions struct {
	// Namespace and Name of the Lease in the source cluster.
	Namespace, Name string
	// Identity is the holder identity written into the Lease.
	Identity string
	// Period between renewals; the Lease's duration is three periods.
	Period time.Duration
	// Annotations written with every renewal (version, cluster labels).
	Annotations map[string]string
	// FieldManager of the writes.
	FieldManager string
}

// Heartbeat renews a Lease in the source cluster every Period until ctx
// ends, so that the upstream sees that the agent is alive, which version it
// runs and with which cluster labels: one server-side apply per period, on
// whatever source clients the Provider holds at the time (credentials
// reloaded, server moved).
func (p *Provider) Heartbeat(ctx context.Context, opts HeartbeatOptions) {
	logger := klog.FromContext(ctx).WithValues("lease", opts.Namespace+"/"+opts.Name)
	t := time.NewTimer(0)
	defer t.Stop()
	retry := time.Duration(0) // 0: the last beat succeeded
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.beat(ctx, opts)
		switch {
		case err != nil && retry == 0 && ctx.Err() == nil:
			logger.Error(err, "Heartbeat to the source cluster failed; retrying")
			retry = heartbeatRetry
		case err != nil:
			retry = min(2*retry, opts.Period)
		case retry != 0:
			logger.Info("Heartbeat to the source cluster renewed again")
			retry = 0
		}
		// While the source does not answer, beat sooner than the period
		// (1 s, doubling): the beat that gets through is what tells the
		// agent it is back, and what flushes the status it could not write.
		if retry != 0 {
			t.Reset(retry)
		} else {
			t.Reset(opts.Period)
		}
	}
}

// heartbeatRetry is the first pause after a failed heartbeat.
const heartbeatRetry = time.Second

func (p *Provider) beat(ctx context.Context, opts HeartbeatOptions) error {
	source, _ := p.Source()
	now := metav1.NewMicroTime(time.Now())
	seconds := int32(3 * opts.Period / time.Second)
	lease := coordinationv1.Lease(opts.Name, opts.Namespace).
		WithAnnotations(opts.Annotations).
		WithSpec(coordinationv1.LeaseSpec().
			WithHolderIdentity(opts.Identity).
			WithLeaseDurationSeconds(seconds).
			WithRenewTime(now))
	_, err := source.Kube.CoordinationV1().Leases(opts.Namespace).Apply(ctx, lease,
		metav1.ApplyOptions{FieldManager: opts.FieldManager, Force: true})
	return err
}
