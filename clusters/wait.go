package clusters

import (
	"errors"
	"net"
	"net/http"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
)

// How a read waits for an API server that does not answer.
const (
	serverPollFirst = 200 * time.Millisecond
	serverPollMax   = time.Second
)

// withServerWait makes the GET requests of clients on cfg — the informers'
// lists and watches among them — that find the API server not answering
// (connection refused, reset or closed, a dial that fails) wait for it and
// try again, every 200 ms growing to 1 s, until it
// answers or the request's context ends. An informer's reflector that sees
// its list or watch fail instead backs off, doubling from 800 ms to 30 s:
// after a 10 s outage of the API server it came back ~20 s late, and drift
// made meanwhile waited for it. Writes are never retried here.
func withServerWait(cfg *rest.Config) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &serverWait{rt: rt} })
}

type serverWait struct{ rt http.RoundTripper }

func (w *serverWait) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := w.rt.RoundTrip(req)
	if err == nil || req.Method != http.MethodGet || (req.Body != nil && req.Body != http.NoBody) || !notAnswering(err) {
		return resp, err
	}
	interval := serverPollFirst
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-req.Context().Done():
			return nil, err // the first error: what the caller would have had
		case <-t.C:
		}
		// The request itself, not a dial of the URL's host: that host may
		// name no port (https://… of a managed cluster) or be reached
		// through a proxy, and a dial of it would never succeed.
		if resp, err = w.rt.RoundTrip(req); err == nil || !notAnswering(err) {
			return resp, err
		}
		interval = min(interval*3/2, serverPollMax)
		t.Reset(interval)
	}
}

// notAnswering reports errors of a server that is down or unreachable,
// not of one that answered.
func notAnswering(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}
