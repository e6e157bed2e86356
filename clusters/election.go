package clusters

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// ElectionOptions say which Lease decides the leader, and as whom.
type ElectionOptions struct {
	Namespace, Name string
	// Identity is this candidate's holder identity.
	Identity string
	// LeaseDuration is how long a leader's Lease lasts without renewal.
	LeaseDuration time.Duration
}

// RunElected runs run only while this process holds the Lease. When the
// Lease is lost, run's context ends and RunElected returns an error, so that
// the process exits and its restart joins the election anew. When ctx ends
// (a normal shutdown), run's context ends too, and the Lease is released —
// so that a standby takes over at once — only once run has returned: a
// leader's work (a Helm operation among it) never overlaps the next
// leader's.
func RunElected(ctx context.Context, client kubernetes.Interface, opts ElectionOptions, run func(context.Context) error) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, opts.Namespace, opts.Name,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: opts.Identity})
	if err != nil {
		return err
	}
	// The election runs until run has returned; ctx ends run.
	electionCtx, endElection := context.WithCancel(context.WithoutCancel(ctx))
	defer endElection()
	started := make(chan struct{})
	stopStandingBy := context.AfterFunc(ctx, func() {
		select {
		case <-started:
		default:
			endElection() // never led: stop standing by
		}
	})
	defer stopStandingBy()
	runDone := make(chan error, 1)
	leaderelection.RunOrDie(electionCtx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.LeaseDuration * 2 / 3,
		RetryPeriod:     max(opts.LeaseDuration/7, 200*time.Millisecond),
		ReleaseOnCancel: true,
		Name:            opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leading context.Context) {
				close(started)
				klog.FromContext(ctx).Info("Leading", "identity", opts.Identity)
				runCtx, cancel := context.WithCancel(leading)
				stop := context.AfterFunc(ctx, cancel)
				err := run(runCtx)
				stop()
				cancel()
				runDone <- err
				endElection() // now the Lease may go
			},
			OnStoppedLeading: func() {},
		},
	})
	select {
	case <-started:
	default:
		return nil // never led: ctx ended while standing by
	}
	if err := <-runDone; err != nil {
		return err
	}
	if ctx.Err() == nil {
		return fmt.Errorf("leader election lost by %s", opts.Identity)
	}
	return nil
}
