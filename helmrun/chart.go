package helmrun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/ignore"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// loaded is a chart ready to install, and the digest that identifies it.
type loaded struct {
	chart  *chart.Chart
	digest string
	// version is the chart's version as resolved ("1.2.3").
	version string
}

// credentials of a chart repository or registry.
type credentials struct {
	username, password string
	ca                 []byte
}

// fetchTimeout bounds one download of an index, a chart or a tag list.
const fetchTimeout = 2 * time.Minute

// maxIndexBytes bounds a repository index read into memory.
const maxIndexBytes = 64 << 20

// loadChart loads the chart that spec.helm names: from the Bundle's
// resources, from an HTTP(S) repository, or from an OCI registry.
// Credentials travel only to the repository's or registry's own host, and
// over plain HTTP only when allowInsecure.
func (r *Releases) loadChart(ctx context.Context, spec *manifests.BundleSpec, creds *credentials, allowInsecure bool) (*loaded, error) {
	h := spec.Helm
	switch {
	case strings.HasPrefix(h.Chart, "oci://"):
		if h.Repo != "" {
			return nil, fmt.Errorf("spec.helm: chart %q is an OCI reference; repo must be empty", h.Chart)
		}
		return r.loadOCI(ctx, h, h.Chart, creds, allowInsecure)
	case strings.HasPrefix(h.Repo, "oci://"):
		return r.loadOCI(ctx, h, strings.TrimSuffix(h.Repo, "/")+"/"+h.Chart, creds, allowInsecure)
	case h.Repo != "":
		return r.loadFromRepo(ctx, h, creds, allowInsecure)
	default:
		return loadFromResources(spec.Resources, h.Chart)
	}
}

// ErrPlainCredentials refuses to send credentials over plain HTTP.
var ErrPlainCredentials = errors.New("credentials are never sent over plain HTTP unless a BundleRestriction allows insecure repositories")

// loadFromResources loads a chart directory (resources named dir/...) or a
// packaged chart (a resource named like the chart) of the Bundle.
func loadFromResources(resources []manifests.Resource, name string) (*loaded, error) {
	dir := strings.Trim(path.Clean(name), "/")
	var files []*archive.BufferedFile
	sum := sha256.New()
	for _, res := range resources {
		data, err := manifests.ResourceBytes(res)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", res.Name, err)
		}
		clean := path.Clean(res.Name)
		if clean == dir {
			c, err := loader.LoadArchive(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("chart %s: %w", name, err)
			}
			s := sha256.Sum256(data)
			return &loaded{chart: c, digest: hex.EncodeToString(s[:]), version: c.Metadata.Version}, nil
		}
		rel, ok := strings.CutPrefix(clean, dir+"/")
		if dir == "." {
			rel, ok = clean, true
		}
		if !ok {
			continue
		}
		files = append(files, &archive.BufferedFile{Name: rel, Data: data})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("chart %q: no resource is that chart or a file in that directory", name)
	}
	files, err := withoutIgnored(files)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		fmt.Fprintf(sum, "%d:%s%d:", len(f.Name), f.Name, len(f.Data))
		sum.Write(f.Data)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	return &loaded{chart: c, digest: hex.EncodeToString(sum.Sum(nil)), version: c.Metadata.Version}, nil
}

// withoutIgnored drops the files that the chart's .helmignore names, as
// `helm package` and `helm install DIR` do.
func withoutIgnored(files []*archive.BufferedFile) ([]*archive.BufferedFile, error) {
	var rules *ignore.Rules
	for _, f := range files {
		if f.Name == ignore.HelmIgnore {
			r, err := ignore.Parse(bytes.NewReader(f.Data))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ignore.HelmIgnore, err)
			}
			rules = r
		}
	}
	if rules == nil {
		return files, nil
	}
	out := files[:0]
	for _, f := range files {
		if f.Name != ignore.HelmIgnore && rules.Ignore(f.Name, fileInfo(f.Name)) {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// loadFromRepo resolves the version constraint against the repository's
// index and loads that chart, from the cache when its digest is there.
func (r *Releases) loadFromRepo(ctx context.Context, h *manifests.HelmSpec, creds *credentials, allowInsecure bool) (*loaded, error) {
	client, err := httpClient(creds, false)
	if err != nil {
		return nil, err
	}
	repoURL, err := url.Parse(h.Repo)
	if err != nil || (repoURL.Scheme != "https" && repoURL.Scheme != "http") || repoURL.Host == "" {
		return nil, fmt.Errorf("spec.helm.repo %q: not an http(s):// or oci:// URL", h.Repo)
	}
	auth := authFor{creds: creds, host: repoURL.Host, allowInsecure: allowInsecure}
	indexURL := strings.TrimSuffix(h.Repo, "/") + "/index.yaml"
	body, err := fetch(ctx, client, indexURL, auth, maxIndexBytes)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", h.Repo, err)
	}
	var index repo.IndexFile
	if err := yaml.Unmarshal(body, &index); err != nil {
		return nil, fmt.Errorf("repository %s: index.yaml: %w", h.Repo, err)
	}
	index.SortEntries()
	cv, err := index.Get(h.Chart, h.Version)
	if err != nil {
		if h.Version == "" {
			return nil, fmt.Errorf("repository %s: chart %q: %w", h.Repo, h.Chart, err)
		}
		return nil, fmt.Errorf("repository %s: chart %q version %q: %w", h.Repo, h.Chart, h.Version, err)
	}
	if len(cv.URLs) == 0 {
		return nil, fmt.Errorf("repository %s: chart %s %s has no URL", h.Repo, cv.Name, cv.Version)
	}
	chartURL, err := repo.ResolveReferenceURL(h.Repo, cv.URLs[0])
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", h.Repo, err)
	}
	data, digest, err := r.cache.getBySum(cv.Digest, func() ([]byte, error) {
		return fetch(ctx, client, chartURL, auth, archive.MaxDecompressedChartSize)
	})
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", cv.Name, cv.Version, err)
	}
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", cv.Name, cv.Version, err)
	}
	return &loaded{chart: c, digest: digest, version: cv.Version}, nil
}

// loadOCI resolves the version constraint against the registry's tags and
// loads that chart, from the cache when its manifest digest is there.
func (r *Releases) loadOCI(ctx context.Context, h *manifests.HelmSpec, chartRef string, creds *credentials, allowInsecure bool) (*loaded, error) {
	rc, err := r.registryClient(h, chartRef, creds, allowInsecure)
	if err != nil {
		return nil, err
	}
	ref, err := taggedRef(ctx, rc, chartRef, h.Version)
	if err != nil {
		return nil, err
	}
	desc, err := withContext(ctx, func() (string, error) {
		d, err := rc.Resolve(ref)
		return d.Digest.String(), err
	})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", ref, err)
	}
	// Pulled by the digest just resolved (a tag may move meanwhile), and
	// cached under registry/repository@digest: another registry that
	// claims the same digest does not share the entry.
	byDigest := untagged(ref) + "@" + desc
	data, err := r.cache.getByRef(byDigest, func() ([]byte, error) {
		res, err := withContext(ctx, func() (*registry.PullResult, error) { return rc.Pull(byDigest) })
		if err != nil {
			return nil, err
		}
		if res.Manifest == nil || res.Manifest.Digest != desc {
			return nil, fmt.Errorf("pulled a manifest other than %s", desc)
		}
		return res.Chart.Data, nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", ref, err)
	}
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", ref, err)
	}
	return &loaded{chart: c, digest: desc, version: c.Metadata.Version}, nil
}

// registryClient is a registry client for chartRef: responses bounded,
// credentials only as the spec and its namespace allow.
func (r *Releases) registryClient(h *manifests.HelmSpec, chartRef string, creds *credentials, allowInsecure bool) (*registry.Client, error) {
	if h.Insecure && creds != nil && creds.username != "" && !allowInsecure {
		return nil, fmt.Errorf("registry %s with insecure: %w", chartRef, ErrPlainCredentials)
	}
	client, err := httpClient(creds, h.Insecure)
	if err != nil {
		return nil, err
	}
	client.Transport = boundedBodies{rt: client.Transport}
	opts := []registry.ClientOption{registry.ClientOptHTTPClient(client), registry.ClientOptWriter(io.Discard),
		registry.ClientOptCredentialsFile(r.cache.credentialsFile())}
	if h.Insecure {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	if creds != nil && creds.username != "" {
		opts = append(opts, registry.ClientOptBasicAuth(creds.username, creds.password))
	}
	return registry.NewClient(opts...)
}

// taggedRef is chartRef without oci:// and with a tag: its own, or the
// newest that version (a version or a constraint) matches.
func taggedRef(ctx context.Context, rc *registry.Client, chartRef, version string) (string, error) {
	ref := strings.TrimPrefix(chartRef, "oci://")
	if _, tagged := tagOf(ref); tagged {
		if version != "" {
			return "", fmt.Errorf("spec.helm: chart %q has a tag; version must then be empty", chartRef)
		}
		return ref, nil
	}
	tags, err := withContext(ctx, func() ([]string, error) { return rc.Tags(ref) })
	if err != nil {
		return "", fmt.Errorf("registry %s: %w", chartRef, err)
	}
	tag, err := registry.GetTagMatchingVersionOrConstraint(tags, version)
	if err != nil {
		return "", fmt.Errorf("registry %s: %w", chartRef, err)
	}
	return ref + ":" + tag, nil
}

// tagOf returns the tag of an OCI reference, if it has one.
func tagOf(ref string) (string, bool) {
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 && !strings.Contains(last, "@") {
		return last[i+1:], true
	}
	return "", strings.Contains(last, "@")
}

// untagged is an OCI reference without its tag or digest.
func untagged(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		ref = ref[:i]
	}
	return ref
}

// withContext runs f, which takes no context (Helm's registry client),
// and stops waiting for it when ctx is done; the HTTP client's timeout
// bounds f itself.
func withContext[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// httpClient is a client for a repository or registry: the system's
// roots plus the credentials' CA, and a timeout on every request. A
// redirect to another host or scheme drops the credentials.
func httpClient(creds *credentials, plain bool) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if creds != nil && len(creds.ca) > 0 && !plain {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(creds.ca) {
			return nil, errors.New("credentials: ca.crt holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: fetchTimeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if first := via[0].URL; req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
			req.Header.Del("Authorization")
		}
		return nil
	}}, nil
}

// authFor says which requests carry a repository's credentials: those to
// its own host, over TLS unless allowInsecure.
type authFor struct {
	creds         *credentials
	host          string
	allowInsecure bool
}

// apply sets the credentials on req when they may go there.
func (a authFor) apply(req *http.Request) error {
	if a.creds == nil || a.creds.username == "" || req.URL.Host != a.host {
		return nil // another host (an index may point anywhere) gets no credentials
	}
	if req.URL.Scheme != "https" && !a.allowInsecure {
		return fmt.Errorf("GET %s: %w", req.URL.Redacted(), ErrPlainCredentials)
	}
	req.SetBasicAuth(a.creds.username, a.creds.password)
	return nil
}

// fetch GETs url, with the credentials that may go there, reading at most
// limit bytes.
func fetch(ctx context.Context, client *http.Client, u string, auth authFor, limit int64) ([]byte, error) {
	if _, err := url.Parse(u); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if err := auth.apply(req); err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, limit)
	}
	return body, nil
}

// maxRegistryJSON bounds what a registry sends as JSON — manifests,
// indexes, tag lists, tokens: a few KiB each in practice.
const maxRegistryJSON = 4 << 20

// boundedBodies bounds every response of a registry while it is read: JSON
// to maxRegistryJSON, anything else (a chart's layer) to Helm's bound on a
// chart. A hostile registry cannot make the agent read without end.
type boundedBodies struct{ rt http.RoundTripper }

func (b boundedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	limit := int64(archive.MaxDecompressedChartSize)
	if strings.Contains(resp.Header.Get("Content-Type"), "json") {
		limit = maxRegistryJSON
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %d bytes, more than %d", req.URL.Redacted(), resp.ContentLength, limit)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: limit, limit: limit}
	return resp, nil
}

// limitedBody fails a read beyond limit bytes.
type limitedBody struct {
	rc          io.ReadCloser
	left, limit int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n + int(l.left), fmt.Errorf("response larger than %d bytes", l.limit)
	}
	return n, err
}

func (l *limitedBody) Close() error { return l.rc.Close() }
