package apply

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// WaitTimeout bounds the wait for a stage (WaitReady).
const WaitTimeout = time.Minute

// WaitReady waits until every object is Current by kstatus — a
// CustomResourceDefinition once Established and its names accepted, a
// Namespace once Active, a workload once rolled out — or timeout passes.
// It reads each object that is not ready yet, starting at 20 ms between
// rounds and backing off to 1 s, so that a CRD the API server establishes
// in a few milliseconds is not waited on for long and a slow rollout is
// not polled hard. The error names the objects still not ready and why.
func (a *Applier) WaitReady(ctx context.Context, objs []Desired, timeout time.Duration) error {
	pending := append([]Desired(nil), objs...)
	why := map[string]string{}
	backoff := wait.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Cap: time.Second, Steps: 1 << 30}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		left := pending[:0]
		for _, d := range pending {
			ready, reason := a.ready(ctx, d)
			if !ready {
				left = append(left, d)
				why[d.Ref.String()] = reason
			}
		}
		pending = left
		return len(pending) == 0, nil
	})
	if err == nil {
		return nil
	}
	var names []string
	for _, d := range pending {
		names = append(names, d.Ref.String()+" ("+why[d.Ref.String()]+")")
	}
	return fmt.Errorf("not ready after %s: %s", timeout, strings.Join(names, ", "))
}

// ready reads one object and gives kstatus' verdict on it.
func (a *Applier) ready(ctx context.Context, d Desired) (bool, string) {
	obj, err := a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Get(ctx, d.Ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, "not found"
	case err != nil:
		return false, err.Error()
	}
	res, err := kstatus.Compute(obj)
	if err != nil {
		return false, err.Error()
	}
	if res.Status != kstatus.CurrentStatus {
		return false, string(res.Status) + ": " + res.Message
	}
	return true, ""
}
