package clusters

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
