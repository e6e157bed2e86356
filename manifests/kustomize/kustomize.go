// Package kustomize renders Bundles whose resources are a kustomization
// tree (spec.kustomize) with krusty, on an in-memory file system, and
// applies target customizations' yaml overlays. It is apart from
// manifests so that what links manifests alone (the benchmark, its stock
// caches) does not link kustomize.
package kustomize

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	ktypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// Renderer renders spec.kustomize: krusty builds Dir on an in-memory
// file tree made of the Bundle's resources (their names are paths). The
// agent never fetches anything: before krusty runs, every kustomization
// reachable from Dir is read and each path it names — resources, bases,
// components, patches, generators' files, crds, configurations, openapi,
// generators, transformers, validators, replacements — must be a file or
// directory of the tree; URLs, absolute paths and paths outside the tree
// are refused with the reference named, and helmCharts point to spec.helm.
type Renderer struct{}

var _ manifests.Renderer = Renderer{}

// Render implements manifests.Renderer.
func (Renderer) Render(_ context.Context, in manifests.Input) (manifests.Output, error) {
	fs, err := treeOf(in.Spec.Resources)
	if err != nil {
		return manifests.Output{}, err
	}
	dir := cleanPath(in.Spec.Kustomize.Dir)
	c := &checker{fs: fs, seen: map[string]bool{}, patches: map[string]string{}, sizes: map[string]size{}}
	if err := c.check(dir); err != nil {
		return manifests.Output{}, fmt.Errorf("kustomize: %w", err)
	}
	// Refused before krusty builds it: a tree that renders more than the
	// limits would be built whole in memory first.
	limits := in.Limits.OrDefault()
	if sz := c.sizes[dir]; sz.objects > int64(limits.Objects) || sz.bytes > limits.Bytes {
		return manifests.Output{}, fmt.Errorf("kustomize %s: it renders at least %d documents and %d bytes (each base as often as it is referenced), more than the agent's limits of %d documents (--max-bundle-objects) and %d bytes (--max-bundle-bytes); nothing was built",
			displayPath(dir), sz.objects, sz.bytes, limits.Objects, limits.Bytes)
	}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = ktypes.LoadRestrictionsRootOnly
	opts.PluginConfig = ktypes.DisabledPluginConfig()
	m, err := krusty.MakeKustomizer(opts).Run(fs, dir)
	if err != nil {
		return manifests.Output{}, fmt.Errorf("kustomize %s: %s%w", displayPath(dir), c.patchFileOf(err), err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return manifests.Output{}, fmt.Errorf("kustomize %s: %w", displayPath(dir), err)
	}
	res := []manifests.Resource{{Name: "kustomize:" + displayPath(dir), Content: string(out)}}
	// The output is bounded by the agent's limit, not the default: a
	// large tree must not decode to nothing but an error.
	objs, errs := manifests.DecodeWithin(res, in.Limits.OrDefault().Bytes)
	return manifests.Output{Objects: objs, Errors: errs, Source: manifests.RawSource(res)}, nil
}

// treeOf writes the resources into an in-memory file system, at /name.
func treeOf(resources []manifests.Resource) (filesys.FileSystem, error) {
	fs := filesys.MakeFsInMemory()
	for _, r := range resources {
		data, err := manifests.ResourceBytes(r)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.Name, err)
		}
		p := cleanPath(r.Name)
		if p == "/" || strings.Contains(r.Name, "..") {
			return nil, fmt.Errorf("resource %q: a kustomization tree's files need relative paths inside it", r.Name)
		}
		if err := fs.MkdirAll(path.Dir(p)); err != nil {
			return nil, err
		}
		if err := fs.WriteFile(p, data); err != nil {
			return nil, err
		}
	}
	return fs, nil
}

func cleanPath(p string) string   { return path.Clean("/" + p) }
func displayPath(p string) string { return strings.TrimPrefix(p, "/") + "/" }

// kustomizationFiles are the names krusty reads a kustomization from.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// checker checks the kustomizations of a tree, and remembers which file
// holds the patch of which object, to name it when krusty's error does not.
type checker struct {
	fs   filesys.FileSystem
	seen map[string]bool
	// sizes bounds from below what each directory's kustomization
	// renders, bases counted as often as they are referenced: a diamond
	// of bases doubles per level, and is refused before krusty builds it.
	sizes map[string]size
	// patches maps "Kind/name" to the patch file that targets it.
	patches map[string]string
}

// patchFileOf names the patch file an error of krusty is about ("patch
// app/fix.yaml: "), or "" when it cannot tell. krusty names the patch's
// target as a resource ID (ConfigMap.v1.[noGrp]/name.[noNs]), not its file.
func (c *checker) patchFileOf(err error) string {
	msg := err.Error()
	for key, file := range c.patches {
		kind, name, _ := strings.Cut(key, "/")
		if strings.Contains(msg, kind+".") && strings.Contains(msg, "/"+name+".") && !strings.Contains(msg, file) {
			return "patch " + file + ": "
		}
	}
	return ""
}

// size is what a kustomization renders at least: its resources' documents
// and bytes, each base counted as often as it is referenced.
type size struct{ objects, bytes int64 }

func (a size) plus(b size) size { return size{a.objects + b.objects, a.bytes + b.bytes} }

// check checks the kustomization in dir and, recursively, those it
// refers to, and bounds what it renders (c.sizes[dir]).
func (c *checker) check(dir string) error {
	if c.seen[dir] {
		return nil
	}
	c.seen[dir] = true
	k, where, err := c.read(dir)
	if err != nil {
		return err
	}
	refs, patchFiles, err := c.references(dir, where, k)
	if err != nil {
		return err
	}
	sz := generatedSize(k)
	rendered := map[string]bool{} // what krusty renders: resources, bases, components
	//lint:ignore SA1019 krusty still reads the deprecated fields: they are checked too
	for _, r := range slices.Concat(k.Resources, k.Bases, k.Components) {
		rendered[r] = true
	}
	for _, ref := range refs {
		n, err := c.follow(dir, where, ref, rendered[ref])
		if err != nil {
			return err
		}
		sz = sz.plus(n)
	}
	for _, p := range patchFiles {
		c.notePatch(path.Join(dir, p))
	}
	c.sizes[dir] = sz
	return nil
}

// read reads the kustomization of dir and refuses what the agent does not
// run (helmCharts); where names its file in errors.
func (c *checker) read(dir string) (*ktypes.Kustomization, string, error) {
	var file string
	for _, name := range kustomizationFiles {
		if c.fs.Exists(path.Join(dir, name)) {
			file = path.Join(dir, name)
			break
		}
	}
	if file == "" {
		return nil, "", fmt.Errorf("%s has no kustomization.yaml", displayPath(dir))
	}
	data, err := c.fs.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	var k ktypes.Kustomization
	where := strings.TrimPrefix(file, "/")
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, "", fmt.Errorf("%s: %w", where, err)
	}
	if len(k.HelmCharts) > 0 || k.HelmGlobals != nil || len(k.HelmChartInflationGenerator) > 0 {
		return nil, "", fmt.Errorf("%s: helmCharts are not inflated by kustomize here: give the chart as spec.helm", where)
	}
	return &k, where, nil
}

// references lists every path a kustomization names — resources, bases,
// components, CRDs, configurations, plugin configurations, the OpenAPI
// schema, patches, replacements, generators' files — and, of them, the
// patch files. A plugin configuration that names something remote is
// refused.
func (c *checker) references(dir, where string, k *ktypes.Kustomization) (refs, patchFiles []string, err error) {
	refs = append(refs, k.Resources...)
	//lint:ignore SA1019 krusty still reads the deprecated fields: they are checked too
	refs = append(refs, k.Bases...)
	refs = append(refs, k.Components...)
	refs = append(refs, k.Crds...)
	refs = append(refs, k.Configurations...)
	// Plugin configurations, inline or in files: builtin ones name files
	// too (a PatchTransformer's path), which kustomize would fetch if
	// remote.
	for _, p := range slices.Concat(k.Generators, k.Transformers, k.Validators) {
		config := []byte(p)
		if !strings.Contains(p, "\n") {
			refs = append(refs, p)
			if config, err = c.fs.ReadFile(path.Join(dir, p)); err != nil {
				continue // not a file: refused by follow
			}
		}
		if ref := remoteIn(config); ref != "" {
			return nil, nil, fmt.Errorf("%s: a generator or transformer configuration names %q, which is remote: the agent fetches nothing; put it in the bundle's resources", where, ref)
		}
	}
	if p := k.OpenAPI["path"]; p != "" {
		refs = append(refs, p)
	}
	//lint:ignore SA1019 krusty still reads the deprecated fields: they are checked too
	for _, p := range append(k.Patches, k.PatchesJson6902...) {
		if p.Path != "" {
			patchFiles = append(patchFiles, p.Path)
		}
	}
	//lint:ignore SA1019 krusty still reads the deprecated fields: they are checked too
	for _, p := range k.PatchesStrategicMerge {
		if s := string(p); !strings.Contains(s, "\n") && !strings.Contains(s, ":") || isRemote(s) {
			patchFiles = append(patchFiles, s) // a path, not an inline patch
		}
	}
	refs = append(refs, patchFiles...)
	for _, r := range k.Replacements {
		if r.Path != "" {
			refs = append(refs, r.Path)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		refs = append(refs, generatorFiles(g.KvPairSources)...)
	}
	for _, g := range k.SecretGenerator {
		refs = append(refs, generatorFiles(g.KvPairSources)...)
	}
	return refs, patchFiles, nil
}

// generatedSize is what a kustomization's generators make, at least.
func generatedSize(k *ktypes.Kustomization) size {
	var sz size
	for _, g := range k.ConfigMapGenerator {
		sz = sz.plus(size{1, generatedBytes(g.KvPairSources)})
	}
	for _, g := range k.SecretGenerator {
		sz = sz.plus(size{1, generatedBytes(g.KvPairSources)})
	}
	return sz
}

// follow checks one path a kustomization in dir names: inside the tree, a
// file or a directory (a kustomization, checked in turn). It returns what
// it adds to the build when rendered says krusty renders it.
func (c *checker) follow(dir, where, ref string, rendered bool) (size, error) {
	if isRemote(ref) {
		return size{}, fmt.Errorf("%s: %q is remote: the agent fetches nothing; put it in the bundle's resources", where, ref)
	}
	if path.IsAbs(ref) {
		return size{}, fmt.Errorf("%s: %q is an absolute path: name a path inside the bundle's tree", where, ref)
	}
	target := path.Join(dir, ref) // rooted: ".." cannot leave the tree
	switch {
	case c.fs.IsDir(target):
		if err := c.check(target); err != nil {
			return size{}, err
		}
		if rendered {
			return c.sizes[target], nil
		}
	case c.fs.Exists(target):
		if rendered {
			data, _ := c.fs.ReadFile(target) // it exists
			body := strings.TrimPrefix(strings.TrimLeft(string(data), " \n"), "---")
			return size{int64(strings.Count("\n"+body, "\n---")) + 1, int64(len(data))}, nil
		}
	default:
		return size{}, fmt.Errorf("%s: %q is not a file or directory of the bundle (resources %s*)", where, ref, displayPath(dir))
	}
	return size{}, nil
}

// generatedBytes is what a generator's literals make, at least.
func generatedBytes(s ktypes.KvPairSources) int64 {
	var n int64
	for _, l := range s.LiteralSources {
		n += int64(len(l))
	}
	return n
}

// notePatch remembers the object a patch file names (its first document).
func (c *checker) notePatch(file string) {
	data, err := c.fs.ReadFile(file)
	if err != nil {
		return
	}
	var doc struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	first, _, _ := strings.Cut(string(data), "\n---")
	if yaml.Unmarshal([]byte(first), &doc) == nil && doc.Kind != "" && doc.Metadata.Name != "" {
		c.patches[doc.Kind+"/"+doc.Metadata.Name] = strings.TrimPrefix(file, "/")
	}
}

// generatorFiles are the files a generator reads: "key=path" or "path".
func generatorFiles(s ktypes.KvPairSources) []string {
	var out []string
	for _, f := range s.FileSources {
		if _, p, ok := strings.Cut(f, "="); ok {
			f = p
		}
		out = append(out, f)
	}
	out = append(out, s.EnvSources...)
	if s.EnvSource != "" {
		out = append(out, s.EnvSource)
	}
	return out
}

// loadingKeys are the fields of builtin plugin configurations that
// kustomize loads files (or charts) from.
var loadingKeys = map[string]bool{"path": true, "paths": true, "files": true, "envs": true, "env": true, "repo": true, "chartHome": true}

// remoteIn returns the first file reference in the YAML documents of a
// plugin configuration that is remote; "" if none (or not YAML, which
// kustomize then refuses itself). A Helm chart generator is refused
// whole, as helmCharts are.
func remoteIn(config []byte) string {
	for _, doc := range strings.Split(string(config), "\n---") {
		var v any
		if yaml.Unmarshal([]byte(doc), &v) != nil {
			continue
		}
		if m, ok := v.(map[string]any); ok && m["kind"] == "HelmChartInflationGenerator" {
			return "HelmChartInflationGenerator"
		}
		if ref := remoteValue(v, false); ref != "" {
			return ref
		}
	}
	return ""
}

// remoteValue finds a remote reference among the values of loadingKeys
// in v; loading says v is one.
func remoteValue(v any, loading bool) string {
	switch v := v.(type) {
	case string:
		if loading && isRemote(v) {
			return v
		}
	case []any:
		for _, e := range v {
			if r := remoteValue(e, loading); r != "" {
				return r
			}
		}
	case map[string]any:
		for k, e := range v {
			if r := remoteValue(e, loading || loadingKeys[k]); r != "" {
				return r
			}
		}
	}
	return ""
}

// isRemote reports references that kustomize would fetch: URLs, and the
// host/org/repo forms it clones with git.
func isRemote(ref string) bool {
	r := strings.ToLower(ref)
	if strings.Contains(r, "://") || strings.HasPrefix(r, "git@") || strings.HasPrefix(r, "git::") || strings.Contains(r, "?ref=") {
		return true
	}
	for _, host := range []string{"github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/"} {
		if strings.HasPrefix(r, host) {
			return true
		}
	}
	return false
}
