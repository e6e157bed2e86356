package main

import (
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/driftwatch/driftwatch"

// layers says, for each package of the agent, which of driftwatch's
// packages it may depend on, directly or not (../shared/DESIGN.md,
// Packages): the layers run one way, so each package can be read and
// tested alone.
var layers = map[string][]string{
	"manifests": {},
	// kustomize renders spec.kustomize and yaml overlays, apart from
	// manifests so that the benchmark's stock caches do not link krusty.
	"manifests/kustomize": {"manifests"},
	"metrics":             {},
	"clusters":            {},
	"ownership":           {"manifests"},
	// tenancy decides what a Bundle may do and as whom: pure, below drift.
	"tenancy": {"manifests"},
	"apply":   {"ownership", "manifests"},
	"watch":   {"ownership", "manifests"},
	"helmrun": {"ownership", "manifests", "clusters"},
	"drift":   {"apply", "watch", "helmrun", "metrics", "ownership", "tenancy", "manifests", "clusters"},
}

// TestPackagesFollowTheLayers checks the layering with `go list -deps`;
// `go test -run Layers -v .` prints each package's dependencies.
func TestPackagesFollowTheLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		allowed, layered := layers[pkg]
		if pkg == "" {
			pkg = "main"
		}
		var ours []string
		for _, dep := range fields[1:] {
			if d, ok := strings.CutPrefix(dep, module+"/"); ok {
				ours = append(ours, d)
			}
		}
		sort.Strings(ours)
		if strings.HasPrefix(pkg, "test/") || strings.HasPrefix(pkg, "tools") {
			continue
		}
		t.Logf("%-10s → %s", pkg, strings.Join(ours, ", "))
		seen[pkg] = true
		if pkg == "main" {
			continue // main wires everything
		}
		if !layered {
			t.Errorf("package %s has no layer: add it to layers and to DESIGN.md's picture", pkg)
			continue
		}
		for _, d := range ours {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s depends on %s; it may depend on %v only", pkg, d, allowed)
			}
		}
	}
	for pkg := range layers {
		if !seen[pkg] {
			t.Errorf("no package %s", pkg)
		}
	}
}
