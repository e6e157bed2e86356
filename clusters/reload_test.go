package clusters

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

func caPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %s, certificate-authority: ca.crt}
users:
- name: u
  user: {tokenFile: token}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`

func TestReadSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca := string(caPEM(t))
	write("ca.crt", ca)
	write("token", "secret-token\n")
	write("kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://one.example:6443"))
	path := filepath.Join(dir, "kubeconfig")

	f, err := readSource(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.config.Host != "https://one.example:6443" || string(f.config.CAData) != ca || f.config.CAFile != "" {
		t.Errorf("config: host %q, CA inlined %v, CAFile %q", f.config.Host, string(f.config.CAData) == ca, f.config.CAFile)
	}
	if f.config.BearerTokenFile != filepath.Join(dir, "token") {
		t.Errorf("token file %q: relative paths are relative to the kubeconfig", f.config.BearerTokenFile)
	}
	if len(f.paths) != 3 {
		t.Errorf("watched files %v, want the kubeconfig, its CA and its token file", f.paths)
	}
	same, err := readSource(path)
	if err != nil || same.fingerprint != f.fingerprint {
		t.Errorf("unchanged files read twice: fingerprints differ (%v)", err)
	}
	write("token", "rotated-token\n")
	rotated, err := readSource(path)
	if err != nil || rotated.fingerprint == f.fingerprint {
		t.Errorf("a new token in the token file does not change the fingerprint (%v)", err)
	}

	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"a half-written kubeconfig", "kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://one.example:6443")[:90], "kubeconfig"},
		{"an empty token file", "token", "", "empty"},
		{"a CA that is not PEM", "ca.crt", "not a certificate", "ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write("kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://one.example:6443"))
			write("token", "secret-token\n")
			write("ca.crt", ca)
			write(tc.file, tc.content)
			if _, err := readSource(path); err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("readSource = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("a missing token file", func(t *testing.T) {
		write("ca.crt", ca)
		write("kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://one.example:6443"))
		if err := os.Remove(filepath.Join(dir, "token")); err != nil {
			t.Fatal(err)
		}
		if _, err := readSource(path); err == nil {
			t.Error("a kubeconfig naming a missing token file was accepted")
		}
	})
}

// TestWatchSourceWithoutNotifications: where no file watcher can be made
// (a node out of inotify instances), a changed source kubeconfig is still
// picked up, by the resync.
func TestWatchSourceWithoutNotifications(t *testing.T) {
	newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("too many open files") }
	t.Cleanup(func() { newWatcher = fsnotify.NewWatcher })
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		// Written to a new file renamed over the old one: never half-read.
		if err := os.WriteFile(filepath.Join(dir, name+".new"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, name+".new"), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", string(caPEM(t)))
	write("token", "secret-token\n")
	write("kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://one.example:6443"))
	target, err := NewClients(&rest.Config{Host: "https://target.example:6443"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Target: target, SourceKubeconfig: filepath.Join(dir, "kubeconfig")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.WatchSource(ctx, ReloadOptions{Resync: 20 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: time.Second})
	}()
	defer func() { cancel(); <-done }()
	write("kubeconfig", fmt.Sprintf(kubeconfigTmpl, "https://two.example:6443"))
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return p.sourceHost() == "https://two.example:6443", nil
	})
	if err != nil {
		t.Fatalf("the changed kubeconfig was not picked up without notifications: source host %s", p.sourceHost())
	}
}
