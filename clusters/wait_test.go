package clusters

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// refusing answers "connection refused" to the first n requests, then 200.
type refusing struct {
	n     int32
	calls atomic.Int32
}

func (r *refusing) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.calls.Add(1) <= r.n {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.OpError{Op: "connect", Err: syscall.ECONNREFUSED}}
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// TestReadsWaitForAServerWithoutAPort: a server URL without a port (EKS,
// GKE, AKS) or one behind a proxy cannot be dialled as written; the wait
// retries the request itself, so a read gets through once the server
// answers (a dial of "host" without a port never would).
func TestReadsWaitForAServerWithoutAPort(t *testing.T) {
	for _, url := range []string{"https://api.example.invalid/api/v1/pods", "http://proxied.example.invalid/api"} {
		rt := &refusing{n: 3}
		w := &serverWait{rt: rt}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a safety net only
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := w.RoundTrip(req)
		cancel()
		if err != nil {
			t.Fatalf("%s: the read never got through: %v (after %d requests)", url, err, rt.calls.Load())
		}
		resp.Body.Close()
		if got := rt.calls.Load(); got != 4 {
			t.Errorf("%s: %d requests, want 4 (3 refused, then the answer)", url, got)
		}
	}
}

// TestWritesAreNotRetried: a write that finds the server down fails at once.
func TestWritesAreNotRetried(t *testing.T) {
	rt := &refusing{n: 1}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, "https://api.example.invalid/x", http.NoBody)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&serverWait{rt: rt}).RoundTrip(req); err == nil || !errors.Is(err, syscall.ECONNREFUSED) || rt.calls.Load() != 1 {
		t.Fatalf("err = %v after %d requests, want the refusal after 1", err, rt.calls.Load())
	}
}
