package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImage builds the image from the static binary that `make image`
// builds (DRIFTWATCH_BINARY), reads it back from the OCI layout and the
// tarball, checks what a restricted pod needs (non-root user, entrypoint),
// and runs the binary extracted from the image's layer.
func TestImage(t *testing.T) {
	binary := os.Getenv("DRIFTWATCH_BINARY")
	if binary == "" {
		binary = "../../bin/driftwatch-linux-amd64"
	}
	if _, err := os.Stat(binary); err != nil {
		t.Fatalf("%v: run make image (it builds the static binary first)", err)
	}
	out := filepath.Join(t.TempDir(), "image")
	if err := build(binary, "/etc/ssl/certs/ca-certificates.crt", out, "example.com/driftwatch:test", "test", "amd64"); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("layout index: %v, %d manifests", err, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != NonRoot || strings.Join(cfg.Config.Entrypoint, " ") != "/driftwatch" || cfg.OS != "linux" {
		t.Errorf("config: user %q, entrypoint %q, os %q", cfg.Config.User, cfg.Config.Entrypoint, cfg.OS)
	}
	tag, _ := name.NewTag("example.com/driftwatch:test")
	fromTar, err := tarball.ImageFromPath(out+".tar", &tag)
	if err != nil {
		t.Fatal(err)
	}
	// The tarball is docker-archive: another manifest format, the same
	// configuration and layers.
	c1, _ := img.ConfigName()
	c2, _ := fromTar.ConfigName()
	l1, _ := img.Layers()
	l2, _ := fromTar.Layers()
	if c1 != c2 || len(l1) != 1 || len(l2) != 1 {
		t.Fatalf("the layout and the tarball differ: config %s vs %s, %d vs %d layers", c1, c2, len(l1), len(l2))
	}
	d1, _ := l1[0].Digest()
	d2, _ := l2[0].Digest()
	if d1 != d2 {
		t.Errorf("the layout and the tarball have different layers: %s, %s", d1, d2)
	}

	// The image's file system holds the binary, the CA bundle, nothing else.
	files := map[string]bool{}
	bin := filepath.Join(t.TempDir(), "driftwatch")
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = true
		if h.Name == "driftwatch" {
			f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	for _, want := range []string{"driftwatch", "etc/ssl/certs/ca-certificates.crt"} {
		if !files[want] {
			t.Errorf("the image lacks %s; it has %v", want, files)
		}
	}
	out2, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out2), "driftwatch ") {
		t.Errorf("the image's binary: %v: %s", err, out2)
	}
}
