package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/driftwatch/driftwatch"

// layers says, for each package of the agent, which of driftwatch's
// packages it may depend on, directly or not (docs/architecture.md,
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
	// guard generates the admission policies of Prevent and Warn mode:
	// pure, below drift.
	"guard": {"ownership", "manifests"},
	// drift's stages of their own: pure, or (events) a writer with no
	// state of drift's.
	"drift/detect":  {"manifests"},
	"drift/status":  {"drift/detect", "watch", "ownership", "manifests"},
	"drift/events":  {"manifests"},
	"drift/depends": {"manifests"},
	"drift/scaling": {"manifests"},
	"drift": {"apply", "watch", "helmrun", "metrics", "ownership", "tenancy", "manifests", "clusters", "guard",
		"drift/detect", "drift/status", "drift/events", "drift/depends", "drift/scaling"},
	// commands are the agent and the CLI: they wire everything.
	"commands": {"drift", "drift/detect", "drift/status", "drift/events", "drift/depends", "drift/scaling", "apply", "watch", "helmrun", "guard",
		"metrics", "ownership", "tenancy", "manifests", "manifests/kustomize", "clusters"},
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
			// main.go is wiring only: it hands the process to commands.
			if !slices.Equal(directImports(t, "."), []string{"commands"}) {
				t.Errorf("main imports %v of driftwatch's packages; it may import commands only", directImports(t, "."))
			}
			continue
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

// directImports are the driftwatch packages that the package in dir
// imports itself.
func directImports(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, "./"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", dir, err, out)
	}
	var ours []string
	for _, imp := range strings.Fields(string(out)) {
		if d, ok := strings.CutPrefix(imp, module+"/"); ok {
			ours = append(ours, d)
		}
	}
	sort.Strings(ours)
	return ours
}

// below are the packages below drift (everything it may import but the
// commands above it).
func below() []string {
	var out []string
	for pkg := range layers {
		if pkg != "drift" && pkg != "commands" {
			out = append(out, pkg)
		}
	}
	sort.Strings(out)
	return out
}

// funcsTaken are the function-typed parameters and fields of the packages
// below drift, each set by the commands (wiring), never by drift: a lower
// package calls back into drift only through an interface it declares
// (watch.Handler, tenancy's restriction lister), so that following a sync
// never climbs back up through a closure.
var funcsTaken = map[string]string{
	"helmrun.Options.Prepare":     "commands: apply's preparation of a chart object (helmrun may not import apply)",
	"helmrun.Options.Source":      "commands: the source cluster's clients in upstream mode",
	"helmrun.Options.ActAs":       "commands: clusters.Provider.Impersonate",
	"watch.Options.NeedsStatus":   "commands: watch.NeedsStatus",
	"manifests.Pipeline.Overlays": "commands: kustomize.Patch (manifests may not import kustomize)",
	"clusters.RunElected()":       "commands: the controller's Run, under a Lease",
}

// TestNothingBelowDriftTakesAFunctionFromIt checks the exported API of the
// packages below drift for function-typed parameters, fields and types:
// each must be one of funcsTaken, and drift's own code must not set them.
func TestNothingBelowDriftTakesAFunctionFromIt(t *testing.T) {
	fset := token.NewFileSet()
	found := map[string]bool{}
	for _, pkg := range below() {
		files, _ := filepath.Glob(filepath.Join(pkg, "*.go"))
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(pkg)
			for _, taken := range funcTyped(f, name) {
				found[taken] = true
				if _, ok := funcsTaken[taken]; !ok {
					t.Errorf("%s (%s) takes a function: lower packages call back through interfaces, or add it to funcsTaken saying who sets it", taken, file)
				}
			}
		}
	}
	for taken := range funcsTaken {
		if !found[taken] {
			t.Errorf("funcsTaken lists %s, which no longer exists", taken)
		}
	}
	// drift sets none of them: no composite literal of those types in drift.
	files, _ := filepath.Glob("drift/*.go")
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, lit := range []string{"helmrun.Options{", "watch.Options{", "manifests.Pipeline{"} {
			if strings.Contains(string(src), lit) {
				t.Errorf("%s builds %s: the commands wire the lower packages, drift is handed them", file, lit)
			}
		}
	}
}

// funcTyped lists the exported function types, function-typed parameters
// of exported functions and methods, and function-typed exported fields
// of exported structs in f, as pkg.Name or pkg.Type.Field.
func funcTyped(f *ast.File, pkg string) []string {
	var out []string
	isFunc := func(e ast.Expr) bool { _, ok := e.(*ast.FuncType); return ok }
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv)) {
				continue
			}
			for _, p := range d.Type.Params.List {
				if isFunc(p.Type) {
					out = append(out, pkg+"."+d.Name.Name+"()")
				}
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				ts, ok := spec.(*ast.TypeSpec)
				if !ok || !ts.Name.IsExported() {
					continue
				}
				if isFunc(ts.Type) {
					out = append(out, pkg+"."+ts.Name.Name)
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				for _, fld := range st.Fields.List {
					for _, n := range fld.Names {
						if n.IsExported() && isFunc(fld.Type) {
							out = append(out, pkg+"."+ts.Name.Name+"."+n.Name)
						}
					}
				}
			}
		}
	}
	return out
}

func exportedRecv(recv *ast.FieldList) bool {
	t := recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	id, ok := t.(*ast.Ident)
	return ok && id.IsExported()
}

// maxFuncLines bounds a function of the product code (everything but
// tests, test/ and tools/): longer ones are split into named steps.
const maxFuncLines = 60

// TestNoFunctionIsLong finds functions of the product code over
// maxFuncLines lines, from func to its closing brace.
func TestNoFunctionIsLong(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (p == "test" || p == "tools" || p == "bin" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			if n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1; n > maxFuncLines {
				t.Errorf("%s: %s is %d lines, more than %d: split it into named steps", p, fd.Name.Name, n, maxFuncLines)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
