package commands

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestRenderGolden renders the example Bundles, and a broken one, offline
// and compares stdout, stderr and the exit code with testdata/*.golden
// (go test -run RenderGolden -update rewrites them).
func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name, file string
		flags      []string
	}{
		// Run from the repository's root, as a user would: the paths in
		// the output are those a user types.
		{"web", "examples/web.yaml", nil},
		{"audit", "examples/audit.yaml", nil},
		{"helm-chart", "examples/helm-chart.yaml", nil},
		{"kustomize-dev", "examples/kustomize.yaml", nil},
		{"kustomize-prod", "examples/kustomize.yaml", []string{"--cluster-label", "env=prod"}},
		{"kustomize-lab", "examples/kustomize.yaml", []string{"--cluster-label", "env=lab"}},
		{"broken", "commands/testdata/broken-bundle.yaml", nil},
		// targetNamespace wins over the objects' own, as in the agent.
		{"target-namespace", "commands/testdata/target-namespace-bundle.yaml", nil},
	}
	t.Chdir("..")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"render", "-f", tt.file}, tt.flags...), &stdout, &stderr)
			got := fmt.Sprintf("# exit code %d\n# stderr:\n%s# stdout:\n%s", code, stderr.String(), stdout.String())
			golden := filepath.Join("commands", "testdata", "render-"+tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run RenderGolden -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("render -f %s differs from %s:\n%s", tt.file, golden, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d: want %s\n        got  %s", i+1, a, b)
		}
	}
	return ""
}
