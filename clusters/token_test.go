package clusters

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
)

// TestTokenFileReReadOn401: a token file that gets a new token while the
// old one is revoked costs one refused request, not client-go's minute.
func TestTokenFileReReadOn401(t *testing.T) {
	var valid atomic.Value
	valid.Store("first")
	var refused atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+valid.Load().(string) {
			refused.Add(1)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.0"}`))
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := tuned(&rest.Config{Host: srv.URL, BearerTokenFile: path}, "test", 0, 0)
	c, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	version := func() error {
		_, err := c.Kube.Discovery().RESTClient().Get().AbsPath("/version").Do(t.Context()).Raw()
		return err
	}
	if err := version(); err != nil {
		t.Fatalf("with the first token: %v", err)
	}
	// Rotated and revoked at once.
	if err := os.WriteFile(path, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	valid.Store("second")
	if err := version(); err == nil {
		t.Fatal("the revoked token was accepted: the test server is wrong")
	}
	if err := version(); err != nil {
		t.Fatalf("after one 401 the new token is not used: %v", err)
	}
	if n := refused.Load(); n != 1 {
		t.Errorf("%d requests refused, want 1", n)
	}
}
