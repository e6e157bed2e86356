// Command image builds driftwatch's container image without a Docker
// daemon: the static binary, Debian's CA bundle (for upstream clusters
// whose certificates a public CA signed) and nothing else, on an empty
// base, run as a non-root user. It writes an OCI image layout directory
// and a tarball that `docker load`, `podman load`, `crane push` and
// `skopeo copy` take.
//
//	go run . -binary ../../bin/driftwatch-linux-amd64 -out ../../bin/image -tag ghcr.io/driftwatch/driftwatch:dev
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRoot is the user and group the image runs as (distroless' nonroot).
const NonRoot = "65532:65532"

func main() {
	binary := flag.String("binary", "", "the static linux binary")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates to include (empty: none)")
	out := flag.String("out", "bin/image", "output: OCI layout directory OUT, and OUT.tar")
	tag := flag.String("tag", "ghcr.io/driftwatch/driftwatch:dev", "image reference")
	version := flag.String("version", "dev", "org.opencontainers.image.version")
	arch := flag.String("arch", "amd64", "architecture of the binary")
	flag.Parse()
	if err := build(*binary, *caBundle, *out, *tag, *version, *arch); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(binary, caBundle, out, tag, version, arch string) error {
	if binary == "" {
		return fmt.Errorf("-binary is required")
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	img, err := Image(binary, caBundle, version, arch)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	lp, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref.String()})); err != nil {
		return err
	}
	if err := tarball.WriteToFile(out+".tar", ref, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n%s (OCI layout), %s.tar\n", ref, digest, out, out)
	return nil
}

// Image returns the image: one layer with /driftwatch and the CA bundle.
func Image(binary, caBundle, version, arch string) (v1.Image, error) {
	files := []file{{path: "driftwatch", src: binary, mode: 0o755}}
	if caBundle != "" {
		files = append(files, file{path: "etc/ssl/certs/ca-certificates.crt", src: caBundle, mode: 0o644})
	}
	layerTar, err := tarOf(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromReader(bytes.NewReader(layerTar), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Entrypoint = []string{"/driftwatch"}
	cfg.Config.Cmd = []string{"agent"}
	cfg.Config.User = NonRoot
	cfg.Config.WorkingDir = "/"
	cfg.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}, "8081/tcp": {}}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "driftwatch",
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  "https://github.com/driftwatch/driftwatch",
	}
	return mutate.ConfigFile(img, cfg)
}

type file struct {
	path, src string
	mode      int64
}

// tarOf makes a layer: the files with their directories, owned by root,
// with a fixed time so that the same inputs give the same digest.
func tarOf(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range sortedDirs(dirs) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		src, err := os.Open(f.src)
		if err != nil {
			return nil, err
		}
		st, err := src.Stat()
		if err != nil {
			src.Close()
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: st.Size(), ModTime: epoch}); err != nil {
			src.Close()
			return nil, err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sortedDirs returns the directories sorted: parents before children.
func sortedDirs(dirs map[string]bool) []string {
	out := make([]string, 0, len(dirs))
	for d := range dirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
