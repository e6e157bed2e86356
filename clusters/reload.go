package clusters

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
)

// The results of a credential reload (driftwatch_credential_reloads_total).
const (
	ReloadSuccess = "success"
	ReloadError   = "error"
)

// Observer hears how the source cluster answers and how its credentials
// are reloaded (the agent's metrics).
type Observer interface {
	// SourceContact is called for every response from the source cluster
	// (ok) and for every request that got none, or a 401 or 403 (not ok).
	SourceContact(ok bool)
	// Reloaded is called for every reload of a cluster's credentials that
	// found them changed: result is ReloadSuccess, or ReloadError when the
	// new files are not usable (the current clients are kept).
	Reloaded(cluster, result string)
}

// ReloadOptions tune WatchSource.
type ReloadOptions struct {
	// Resync re-reads the files this often even without a change
	// notification (file systems that do not deliver them).
	Resync time.Duration
	// RetryMin and RetryMax bound the jittered back-off between re-reads
	// that a refusing source (401, 403) asks for.
	RetryMin, RetryMax time.Duration
}

// DefaultReloadOptions returns the options the agent runs with.
func DefaultReloadOptions() ReloadOptions {
	return ReloadOptions{Resync: time.Minute, RetryMin: 500 * time.Millisecond, RetryMax: 30 * time.Second}
}

// sourceFiles is what a source kubeconfig is made of, read at one time.
type sourceFiles struct {
	config *rest.Config
	raw    clientcmd.ClientConfig
	// paths are the kubeconfig and every file it names.
	paths []string
	// fingerprint digests their contents: equal fingerprints, same
	// credentials and server.
	fingerprint [sha256.Size]byte
}

// readSource reads a kubeconfig and the files it names (token file, client
// certificate and key, CA) and checks that they make a usable
// configuration: a half-written or invalid file is an error, never a
// half-built client. The files are read until two reads in a row agree:
// a Secret volume swaps all its files at once, but between the reads of
// two of them, so one read can see the old kubeconfig and the new CA.
func readSource(path string) (*sourceFiles, error) {
	prev, err := readSourceOnce(path)
	for range 5 {
		if err != nil {
			return nil, err
		}
		var next *sourceFiles
		next, err = readSourceOnce(path)
		if err == nil && next.fingerprint == prev.fingerprint {
			return next, nil
		}
		prev = next
	}
	return nil, fmt.Errorf("%s: its files keep changing while they are read", path)
}

func readSourceOnce(path string) (*sourceFiles, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := resolvePaths(cfg, path); err != nil {
		return nil, err
	}
	loader := clientcmd.NewDefaultClientConfig(*cfg, nil)
	rc, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := inlineTLSFiles(rc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	h := sha256.New()
	h.Write(raw)
	f := &sourceFiles{config: rc, raw: loader, paths: []string{path}}
	for _, p := range referencedFiles(cfg) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s names %w", path, err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return nil, fmt.Errorf("%s names %s, which is empty", path, p)
		}
		h.Write([]byte(p))
		h.Write(b)
		f.paths = append(f.paths, p)
	}
	// Certificates, keys and CAs must parse and match.
	if _, err := rest.TLSConfigFor(rc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	copy(f.fingerprint[:], h.Sum(nil))
	return f, nil
}

// inlineTLSFiles reads the CA, client certificate and key into the
// configuration. client-go caches TLS transports by the files' paths, not
// their contents: a new CA at the same path (a moved upstream, a Secret
// updated in place) would otherwise be ignored.
func inlineTLSFiles(rc *rest.Config) error {
	tls := &rc.TLSClientConfig
	for _, f := range []struct {
		path *string
		data *[]byte
	}{{&tls.CAFile, &tls.CAData}, {&tls.CertFile, &tls.CertData}, {&tls.KeyFile, &tls.KeyData}} {
		if *f.path == "" {
			continue
		}
		b, err := os.ReadFile(*f.path)
		if err != nil {
			return err
		}
		*f.data, *f.path = b, ""
	}
	return nil
}

// resolvePaths makes the kubeconfig's relative file references relative to
// its directory, as client-go's loading rules do (they resolve against
// LocationOfOrigin, which clientcmd.Load leaves empty).
func resolvePaths(cfg *clientcmdapi.Config, path string) error {
	for _, c := range cfg.Clusters {
		c.LocationOfOrigin = path
	}
	for _, a := range cfg.AuthInfos {
		a.LocationOfOrigin = path
	}
	return clientcmd.ResolveLocalPaths(cfg)
}

// referencedFiles lists the files the current context's cluster and user
// name.
func referencedFiles(cfg *clientcmdapi.Config) []string {
	var out []string
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		return nil
	}
	if c := cfg.Clusters[ctx.Cluster]; c != nil && c.CertificateAuthority != "" {
		out = append(out, c.CertificateAuthority)
	}
	if a := cfg.AuthInfos[ctx.AuthInfo]; a != nil {
		for _, p := range []string{a.TokenFile, a.ClientCertificate, a.ClientKey} {
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// sourceTransport reports every answer of the source cluster to the
// Provider: contact for the metrics, and a 401 or 403 as a reason to read
// the credentials again.
type sourceTransport struct {
	rt http.RoundTripper
	p  *Provider
}

func (t *sourceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil { // our own cancellation is not the source's fault
			t.p.contact(false)
		}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		t.p.contact(false)
		t.p.refused()
	default:
		t.p.contact(true)
	}
	return resp, err
}

func (t *sourceTransport) WrappedRoundTripper() http.RoundTripper { return t.rt }

func (p *Provider) contact(ok bool) {
	if p.observer != nil {
		p.observer.SourceContact(ok)
	}
	p.contactMu.Lock()
	defer p.contactMu.Unlock()
	if ok && !p.answering {
		close(p.answered)
		p.answered = make(chan struct{})
	}
	p.answering = ok
}

// Answering returns a channel that is closed when the source cluster
// answers again after it did not (a connection error, 401 or 403): the
// moment to flush what could not be written while it was away.
func (p *Provider) Answering() <-chan struct{} {
	p.contactMu.Lock()
	defer p.contactMu.Unlock()
	return p.answered
}

// refused asks WatchSource to read the credentials again.
func (p *Provider) refused() {
	select {
	case p.refusedc <- struct{}{}:
	default: // one pending request is enough
	}
}

// sourceClients builds the source cluster's clients from files read by
// readSource.
func (p *Provider) sourceClients(f *sourceFiles) (*Clients, error) {
	cfg := tuned(f.config, p.opts.UserAgent, p.opts.SourceQPS, p.opts.SourceBurst)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &sourceTransport{rt: rt, p: p} })
	c, err := NewClients(cfg)
	if err != nil {
		return nil, err
	}
	c.rawConfig = f.raw
	return c, nil
}

// WatchSource keeps the source cluster's clients in step with the source
// kubeconfig and the files it names, until ctx ends. A Secret mounted as a
// volume changes by swapping a "..data" symlink in its directory, and an
// editor renames a new file over the old one, so the directories are
// watched, not the files. Every change is read and validated; a usable
// one replaces the clients (ReplaceSource), a broken one is reported and
// the current clients are kept. A 401 or 403 from the source makes it read
// the files again at once, then with a jittered back-off while the source
// keeps refusing: a token revoked before its successor lands recovers as
// soon as the new file is there. Where the directories cannot be watched
// (a node out of inotify instances) the files are re-read every
// opts.Resync and on every refusal. Without --source-kubeconfig it returns
// at once.
func (p *Provider) WatchSource(ctx context.Context, opts ReloadOptions) {
	if p.sourcePath == "" {
		return
	}
	logger := klog.FromContext(ctx).WithValues("kubeconfig", p.sourcePath)
	dirs := watchDirs(logger, opts.Resync)
	defer dirs.close()
	dirs.add(p.sourcePaths())
	resync := time.NewTicker(opts.Resync)
	defer resync.Stop()
	retry := opts.RetryMin
	var notBefore time.Time // of the next re-read a refusal may ask for
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-dirs.errors():
			logger.Error(err, "Watching the source credentials")
			continue
		case <-dirs.events():
		case <-resync.C:
		case <-p.refusedc:
			if time.Now().Before(notBefore) {
				continue // the source refuses still; the last re-read is recent
			}
			notBefore = time.Now().Add(retry/2 + rand.N(retry)) // jittered
			retry = min(2*retry, opts.RetryMax)
		}
		changed, paths, err := p.reloadSource()
		switch {
		case err != nil:
			logger.Error(err, "The source credentials changed but are not usable; keeping the current ones")
		case changed:
			logger.Info("Source credentials reloaded", "host", p.sourceHost())
			retry, notBefore = opts.RetryMin, time.Time{}
		}
		dirs.add(paths)
	}
}

// dirWatch follows the directories of the source credentials' files.
// Without a watcher (a node out of inotify instances: the limit is per
// user, 128 by default) it delivers nothing, and the files are still
// re-read every resync and on every refusal.
type dirWatch struct {
	w       *fsnotify.Watcher // nil: none could be made
	watched map[string]bool
	logger  klog.Logger
}

func watchDirs(logger klog.Logger, resync time.Duration) *dirWatch {
	d := &dirWatch{watched: map[string]bool{}, logger: logger}
	w, err := newWatcher()
	if err != nil {
		logger.Error(err, "Cannot watch the source credentials for changes; re-reading them every resync and on a 401 or 403 only", "resync", resync)
		return d
	}
	d.w = w
	return d
}

// add watches the directories of paths not watched yet.
func (d *dirWatch) add(paths []string) {
	if d.w == nil {
		return
	}
	for _, path := range paths {
		dir := filepath.Dir(path)
		if d.watched[dir] {
			continue
		}
		if err := d.w.Add(dir); err != nil {
			d.logger.Error(err, "Cannot watch a directory of the source credentials; re-reading them every resync only", "dir", dir)
			continue
		}
		d.watched[dir] = true
	}
}

// events and errors are the watcher's channels; nil (never ready) without one.
func (d *dirWatch) events() <-chan fsnotify.Event {
	if d.w == nil {
		return nil
	}
	return d.w.Events
}

func (d *dirWatch) errors() <-chan error {
	if d.w == nil {
		return nil
	}
	return d.w.Errors
}

func (d *dirWatch) close() {
	if d.w != nil {
		_ = d.w.Close() // closing a watcher fails only when it is closed already
	}
}

// newWatcher makes WatchSource's file watcher (a test makes it fail).
var newWatcher = fsnotify.NewWatcher

// reloadSource reads the source kubeconfig again and, when it or a file it
// names changed, replaces the source clients. It returns the paths to
// watch.
func (p *Provider) reloadSource() (changed bool, paths []string, err error) {
	f, err := readSource(p.sourcePath)
	p.mu.Lock()
	repeated := err != nil && err.Error() == p.lastReloadErr
	p.lastReloadErr = ""
	if err != nil {
		p.lastReloadErr = err.Error()
	}
	p.mu.Unlock()
	if err != nil {
		if repeated {
			return false, nil, nil // reported when it first appeared
		}
		if p.observer != nil {
			p.observer.Reloaded("source", ReloadError)
		}
		return false, nil, err
	}
	p.mu.Lock()
	same := f.fingerprint == p.sourceFingerprint
	p.mu.Unlock()
	if same {
		return false, f.paths, nil
	}
	c, err := p.sourceClients(f)
	if err != nil {
		if p.observer != nil {
			p.observer.Reloaded("source", ReloadError)
		}
		return false, f.paths, err
	}
	p.mu.Lock()
	p.sourceFingerprint = f.fingerprint
	p.sourceFiles = f.paths
	p.mu.Unlock()
	p.ReplaceSource(c)
	if p.observer != nil {
		p.observer.Reloaded("source", ReloadSuccess)
	}
	return true, f.paths, nil
}

func (p *Provider) sourcePaths() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sourceFiles)
}

func (p *Provider) sourceHost() string {
	c, _ := p.Source()
	return c.Config.Host
}
