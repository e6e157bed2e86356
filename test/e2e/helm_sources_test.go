package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	helmregistry "helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

// packageChart packages testdata/charts/<name> at version into dir and
// returns the archive's path.
func packageChart(t *testing.T, name, version, dir string) string {
	t.Helper()
	var files []*archive.BufferedFile
	for _, r := range chartFiles(t, name) {
		data := []byte(r.Content)
		rel := strings.TrimPrefix(r.Name, name+"/")
		if rel == "Chart.yaml" {
			data = []byte(strings.Replace(r.Content, "version: 0.1.0", "version: "+version, 1))
		}
		files = append(files, &archive.BufferedFile{Name: rel, Data: data})
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	path, err := chartutil.Save(ch, dir)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// A chart from an HTTP repository (basic auth, credentials from a
// Secret) and from an OCI registry, each at the highest version its
// constraint allows; an unknown version is a clear error.
func TestHelmChartsFromRepositoryAndRegistry(t *testing.T) {
	cache := t.TempDir()
	ns, _ := setup(t, "--chart-cache-dir", cache)
	dir := t.TempDir()
	for _, v := range []string{"1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0"} {
		packageChart(t, "web", v, dir)
	}
	files := http.FileServer(http.Dir(dir))
	// TLS: credentials never travel over plain HTTP (unless a
	// BundleRestriction allows it); the Secret carries the CA.
	repoSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "dw" || p != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer repoSrv.Close()
	repositoryIndex(t, ns, dir, repoSrv.URL, repoSrv)

	ociSrv := httptest.NewServer(registry.New(registry.Logger(nopLogger())))
	defer ociSrv.Close()
	host := strings.TrimPrefix(ociSrv.URL, "http://")
	rc, err := helmregistry.NewClient(helmregistry.ClientOptPlainHTTP(), helmregistry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "config.json")))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		data, err := os.ReadFile(packageChart(t, "web", v, t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Push(data, host+"/charts/web:"+v); err != nil {
			t.Fatalf("pushing web %s: %v", v, err)
		}
	}

	createBundle(t, ns, "fromrepo", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL, Version: "^1.0", CredentialsSecret: "repo-auth"}}))
	createBundle(t, ns, "fromoci", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Repo: "oci://" + host + "/charts", Chart: "web", Version: ">=1.1 <3", Insecure: true}}))
	createBundle(t, ns, "nover", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL, Version: "^9", CredentialsSecret: "repo-auth"}}))
	createBundle(t, ns, "noauth", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL}}))

	waitBundle(t, ns, "fromrepo", "Ready", ready)
	waitConfigMap(t, ns, "fromrepo-config", "version", "1.2.0") // not the pre-release, not 2.x
	waitBundle(t, ns, "fromoci", "Ready", ready)
	waitConfigMap(t, ns, "fromoci-config", "version", "2.0.0")
	synced := func(b *manifests.Bundle, part string) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, part)
	}
	waitBundle(t, ns, "nover", "an error naming the version", func(b *manifests.Bundle) bool { return synced(b, `version "^9"`) })
	waitBundle(t, ns, "noauth", "an error naming the repository's answer", func(b *manifests.Bundle) bool {
		return synced(b, "401 Unauthorized") || synced(b, "certificate")
	})
	cached, _ := filepath.Glob(filepath.Join(cache, "*.tgz"))
	if len(cached) != 2 {
		t.Errorf("chart cache holds %v, want the two charts installed", cached)
	}
}

// A release written by Helm 3 (its record format, objects written
// client-side by the helm manager) is read by helm v4 and by the agent,
// and upgraded by server-side apply.
func TestHelm3ReleaseIsReadAndUpgraded(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "old-config",
		Labels:      map[string]string{"app.kubernetes.io/managed-by": "Helm"},
		Annotations: map[string]string{"meta.helm.sh/release-name": "old", "meta.helm.sh/release-namespace": ns}},
		Data: map[string]string{"greeting": "from helm 3", "color": "none", "version": "0.1.0", "env": "none"}}
	if _, err := cp.Client().CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{FieldManager: "helm"}); err != nil {
		t.Fatal(err)
	}
	// Helm 3.x's JSON: "deleted": "" and no apply_method.
	record := `{"name":"old","info":{"first_deployed":"2025-06-01T10:00:00Z","last_deployed":"2025-06-01T10:00:00Z","deleted":"",` +
		`"description":"Install complete","status":"deployed"},"chart":{"metadata":{"name":"web","version":"0.1.0","description":"driftwatch's test chart",` +
		`"apiVersion":"v2"},"lock":null,"templates":[],"values":{"greeting":"hello"},"schema":null,"files":null},"config":{"greeting":"from helm 3"},` +
		`"manifest":"---\n# Source: web/templates/config.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old-config\ndata:\n  greeting: \"from helm 3\"\n",` +
		`"version":1,"namespace":"` + ns + `"}`
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	if _, err := w.Write([]byte(record)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := cp.Client().CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sh.helm.release.v1.old.v1", Labels: map[string]string{"name": "old", "owner": "helm", "status": "deployed", "version": "1"}},
		Type:       "helm.sh/release.v1",
		Data:       map[string][]byte{"release": []byte(base64.StdEncoding.EncodeToString(gz.Bytes()))},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if revs := helmHistory(t, ns, "old"); len(revs) != 1 || revs[0].Status != "deployed" {
		t.Fatalf("helm v4 reads the Helm 3 record as %v", revs)
	}
	createBundle(t, ns, "old", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, Resources: chartFiles(t, "web"),
		Helm: &manifests.HelmSpec{Chart: "web", TakeOwnership: true, Values: map[string]any{"greeting": "from driftwatch"}}}))
	waitBundle(t, ns, "old", "Ready", ready)
	revs := waitRevisions(t, ns, "old", 2)
	if revs[0].Status != "superseded" {
		t.Errorf("history %v", revs)
	}
	got := waitConfigMap(t, ns, "old-config", "greeting", "from driftwatch")
	onlyAppliedBy(t, "old-config", got, "helm")
	var owner string
	for _, mf := range got.ManagedFields {
		if mf.FieldsV1 != nil && strings.Contains(mf.FieldsV1.String(), `"f:greeting"`) {
			owner += mf.Manager + "/" + string(mf.Operation) + " "
		}
	}
	if owner != "driftwatch/Apply " {
		t.Errorf("data.greeting owned by %q, want driftwatch's apply alone", owner)
	}
	var values map[string]any
	if err := json.Unmarshal([]byte(helmCLI(t, "get", "values", "old", "-n", ns, "-o", "json")), &values); err != nil || values["greeting"] != "from driftwatch" {
		t.Errorf("helm get values: %v %v", values, err)
	}
}

// nopLogger silences the in-process registry's request log.
// repositoryIndex writes dir's index.yaml with chart URLs under base, and
// in ns the Secret repo-auth with the credentials dw/s3cret and the CA of
// the TLS server srv.
func repositoryIndex(t *testing.T, ns, dir, base string, srv *httptest.Server) {
	t.Helper()
	index, err := repo.IndexDirectory(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client().CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "repo-auth"},
		Data: map[string][]byte{"username": []byte("dw"), "password": []byte("s3cret"), "ca.crt": caOf(srv)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// caOf is the PEM of a TLS test server's certificate: its own CA.
func caOf(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// TestCredentialsStayWithTheirRepository: a Bundle's repository
// credentials are read as its account, go only to the repository's own
// host — not to another host its index points at — and never over plain
// HTTP unless a BundleRestriction allows it.
func TestCredentialsStayWithTheirRepository(t *testing.T) {
	ns, _ := setup(t, "--chart-cache-dir", t.TempDir())
	dir := t.TempDir()
	packageChart(t, "web", "1.0.0", dir)
	var mu sync.Mutex
	authSeen := map[string]int{} // server → requests that carried credentials
	record := func(name string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				mu.Lock()
				authSeen[name]++
				mu.Unlock()
			}
			next.ServeHTTP(w, r)
		})
	}
	files := http.FileServer(http.Dir(dir))
	charts := httptest.NewTLSServer(record("charts", files)) // another host: the index points here
	defer charts.Close()
	repoSrv := httptest.NewTLSServer(record("repo", files))
	defer repoSrv.Close()
	plain := httptest.NewServer(record("plain", files))
	defer plain.Close()
	repositoryIndex(t, ns, dir, charts.URL, repoSrv)

	createBundle(t, ns, "elsewhere", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL, CredentialsSecret: "repo-auth"}}))
	waitBundle(t, ns, "elsewhere", "Ready", ready)
	createBundle(t, ns, "plain", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns,
		Helm: &manifests.HelmSpec{Chart: "web", Repo: plain.URL, CredentialsSecret: "repo-auth"}}))
	refused(t, ns, "plain", "spec.helm.credentialsSecret", "plain HTTP")

	// An account that may not read Secrets cannot have the agent read
	// one for it.
	deployerIn(t, ns)
	createBundle(t, ns, "noread", specYAML(t, manifests.BundleSpec{DefaultNamespace: ns, ServiceAccountName: "deployer",
		Helm: &manifests.HelmSpec{Chart: "web", Repo: repoSrv.URL, CredentialsSecret: "repo-auth"}}))
	waitBundle(t, ns, "noread", "the Secret read refused", func(b *manifests.Bundle) bool {
		c := condition(b, manifests.ConditionSynced)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, `cannot get resource "secrets"`) &&
			strings.Contains(c.Message, "system:serviceaccount:"+ns+":deployer")
	})

	mu.Lock()
	defer mu.Unlock()
	if authSeen["repo"] == 0 {
		t.Errorf("the repository never received the credentials (%v): the test proves nothing", authSeen)
	}
	if authSeen["charts"] != 0 || authSeen["plain"] != 0 {
		t.Errorf("credentials sent to another host or over plain HTTP: %v", authSeen)
	}
}
