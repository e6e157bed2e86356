package cluster

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// BuildBinaries returns the directory that holds the control-plane binaries.
// $DRIFTWATCH_BIN_DIR wins when set; otherwise tools/build.sh builds them
// into the cache on first use (several minutes) and returns at once after.
func BuildBinaries(ctx context.Context, log io.Writer) (string, error) {
	if dir := os.Getenv("DRIFTWATCH_BIN_DIR"); dir != "" {
		return dir, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate tools/build.sh: no caller information")
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "tools", "build.sh")
	cmd := exec.CommandContext(ctx, script)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

//go:embed kwokstages/*.yaml
var kwokStageFiles embed.FS

// kwokStages returns kwok's own stages (from sigs.k8s.io/kwok v0.8.0,
// kustomize/stage): nodes become Ready and renew their leases, pods become
// Ready, complete, are deleted, and — labelled
// pod-container-running-failed.stage.kwok.x-k8s.io=true — crash.
func kwokStages() string {
	entries, err := kwokStageFiles.ReadDir("kwokstages")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	var docs []string
	for _, e := range entries {
		b, err := kwokStageFiles.ReadFile("kwokstages/" + e.Name())
		if err != nil {
			panic(err)
		}
		docs = append(docs, strings.TrimSpace(string(b)))
	}
	sort.Strings(docs)
	return strings.Join(docs, "\n---\n") + "\n"
}
