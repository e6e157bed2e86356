package clusters

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// tokenFilePeriod is how long a token read from a file is used before the
// file is read again, as client-go does for in-cluster tokens: half the
// time between the kubelet refreshing a projected token and the old one
// expiring.
const tokenFilePeriod = time.Minute

// withTokenFile makes the clients of cfg read its bearer token file again
// as soon as the server answers 401, not only every minute as client-go
// does (its file token source is never reset by a 401): a token that was
// rotated and revoked at once (a Secret updated, a bound object deleted)
// then costs one failed request instead of a minute of them. In-cluster
// configurations and kubeconfigs with tokenFile both name such a file.
func withTokenFile(cfg *rest.Config) {
	if cfg.BearerTokenFile == "" {
		return
	}
	src := &fileToken{path: cfg.BearerTokenFile}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &fileTokenTransport{rt: rt, src: src} })
}

// fileToken is a token read from a file, cached for tokenFilePeriod.
type fileToken struct {
	path string

	mu    sync.Mutex
	token string
	read  time.Time
}

// get returns the token, reading the file when the cached one is stale or
// was read before notBefore.
func (f *fileToken) get() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && time.Since(f.read) < tokenFilePeriod {
		return f.token, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		if f.token != "" {
			return f.token, nil // a file being replaced; the next request reads it
		}
		return "", fmt.Errorf("reading token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		if f.token != "" {
			return f.token, nil
		}
		return "", fmt.Errorf("token file %s is empty", f.path)
	}
	f.token, f.read = tok, time.Now()
	return tok, nil
}

// refused forgets the token if it is the one the server refused.
func (f *fileToken) refused(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token == token {
		f.read = time.Time{}
	}
}

// fileTokenTransport authenticates requests with the file's token. A
// WrapTransport runs inside client-go's authentication round trippers, so
// it replaces the header that client-go's own (one-minute) copy of the
// same file's token set.
type fileTokenTransport struct {
	rt  http.RoundTripper
	src *fileToken
}

func (t *fileTokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	token, err := t.src.get()
	if err != nil {
		return t.rt.RoundTrip(req) // client-go's own token source decides
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := t.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		t.src.refused(token)
	}
	return resp, err
}

func (t *fileTokenTransport) WrappedRoundTripper() http.RoundTripper { return t.rt }
