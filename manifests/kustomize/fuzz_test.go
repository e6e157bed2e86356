package kustomize

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	ktypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// The tree around the fuzzed files: app/ is built, and holds the fuzzed
// kustomization.yaml and extra.yaml beside a ConfigMap; base/ is a
// kustomization that app/ may refer to.
var (
	fuzzFixed = []manifests.Resource{
		{Name: "app/cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: v}\n"},
		{Name: "base/kustomization.yaml", Content: "resources: [cm.yaml]\n"},
		{Name: "base/cm.yaml", Content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {k: v}\n"},
	}
	// fuzzPaths are the files and directories of the tree.
	fuzzPaths = map[string]bool{"/": true, "/app": true, "/base": true, "/app/kustomization.yaml": true, "/app/extra.yaml": true,
		"/app/cm.yaml": true, "/base/kustomization.yaml": true, "/base/cm.yaml": true}
)

// FuzzKustomize builds app/ with a fuzzed kustomization.yaml and one
// fuzzed file beside it. Whatever they say, nothing is fetched, errors
// say they are kustomize's, what the kustomization must be refused for
// (mustRefuse) is refused, and a render is complete and repeatable.
func FuzzKustomize(f *testing.F) {
	trap := newFetchTrap(f)
	for _, seed := range [][2]string{
		{"resources: [cm.yaml, ../base]\npatches: [{path: extra.yaml}]\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {k: patched}\n"},
		{"resources: [../base]\nnamePrefix: p-\nlabels: [{pairs: {env: prod}}]\nconfigMapGenerator:\n- name: settings\n  files: [conf=extra.yaml]\n", "mode: prod\n"},
		{"resources: [cm.yaml]\ntransformers: [extra.yaml]\n", "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: fix}\ntarget: {kind: ConfigMap}\npatch: '[{\"op\": \"add\", \"path\": \"/data/x\", \"value\": \"y\"}]'\n"},
		{"resources: [https://example.com/cm.yaml]\n", ""},
		{"resources: ['github.com/example/repo//base?ref=v1']\n", ""},
		{"components: [git@github.com:example/repo.git]\n", ""},
		{"resources: [../../etc/passwd]\n", ""},
		{"resources: [/etc/passwd]\n", ""},
		// Beyond the root is the root, as in krusty's in-memory tree:
		// this names base/, and nothing outside the Bundle.
		{"resources: [../../../../base]\n", ""},
		{"helmCharts: [{name: x, repo: https://charts.example.com}]\n", ""},
		{"resources: [cm.yaml]\npatches: [{path: extra.yaml}]\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app\n"},
		{"resources: [cm.yaml]\npatches: [{path: extra.yaml}]\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nobody}\ndata: {k: w}\n"},
		{"resources: [extra.yaml]\n", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap}\n"},
		{"components: [../base]\n", ""},
		{"", ""},
		{aliasBombKustomization, ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, kustomization, extra string) {
		in := manifests.Input{Spec: &manifests.BundleSpec{Kustomize: &manifests.KustomizeSpec{Dir: "app"},
			Resources: append([]manifests.Resource{
				{Name: "app/kustomization.yaml", Content: kustomization},
				{Name: "app/extra.yaml", Content: extra},
			}, fuzzFixed...)}}
		out, err := Renderer{}.Render(t.Context(), in)
		if got := trap.fetched(); len(got) > 0 {
			t.Fatalf("the render fetched %q: the agent fetches nothing (error: %v)", got, err)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kustomize") {
				t.Errorf("error %q does not say it is kustomize's", err)
			}
		} else {
			if why := mustRefuse(kustomization); why != "" {
				t.Fatalf("rendered although %s", why)
			}
			checkRendered(t, out)
		}

		// A render is a function of the Bundle: were it not, the Bundle's
		// status would change at every resync.
		again, errAgain := Renderer{}.Render(t.Context(), in)
		trap.fetched()
		if fmt.Sprint(err) != fmt.Sprint(errAgain) {
			t.Fatalf("a second render fails otherwise: %v, then %v", err, errAgain)
		}
		if err == nil && (!reflect.DeepEqual(out.Objects, again.Objects) || !reflect.DeepEqual(out.Source, again.Source) ||
			fmt.Sprint(out.Errors) != fmt.Sprint(again.Errors)) {
			t.Errorf("a second render gives another result")
		}
	})
}

// aliasBombKustomization is a "billion laughs" in a kustomization.
const aliasBombKustomization = `a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
resources: [*f]
`

// mustRefuse says why a kustomization at app/ must not render, from what
// it names itself: helmCharts, or resources, components or patches that
// are URLs, absolute paths, or paths that are no file or directory of the
// tree. A "../" beyond the root stays at the root, as in the in-memory
// tree krusty reads: nothing outside the Bundle can be named at all.
// It returns "" when the kustomization names nothing of the kind, or is
// not YAML (then krusty's error is all there is to check).
func mustRefuse(kustomization string) string {
	var k ktypes.Kustomization
	if yaml.Unmarshal([]byte(kustomization), &k) != nil {
		return ""
	}
	if len(k.HelmCharts) > 0 {
		return "it names helmCharts"
	}
	refs := append(append([]string(nil), k.Resources...), k.Components...)
	for _, p := range k.Patches {
		if p.Path != "" {
			refs = append(refs, p.Path)
		}
	}
	for _, ref := range refs {
		switch {
		case strings.Contains(ref, "://") || strings.HasPrefix(ref, "git@"):
			return fmt.Sprintf("%q is remote", ref)
		case path.IsAbs(ref):
			return fmt.Sprintf("%q is an absolute path", ref)
		case !fuzzPaths[path.Join("/app", ref)]:
			return fmt.Sprintf("%q is no file or directory of the bundle", ref)
		}
	}
	return ""
}

// checkRendered checks that every object is complete and that the
// render's Source gives it again, as a correction reads it.
func checkRendered(t *testing.T, out manifests.Output) {
	t.Helper()
	for _, err := range out.Errors {
		if err == nil || err.Error() == "" {
			t.Fatalf("an empty error among %v", out.Errors)
		}
	}
	for _, o := range out.Objects {
		u := o.Object
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			t.Errorf("%s: apiVersion %q, kind %q, name %q: all three are required", o.Source, u.GetAPIVersion(), u.GetKind(), u.GetName())
		}
		got, err := out.Source.Object(o.Locator)
		if err != nil {
			t.Errorf("%s: the render's source does not find it again: %v", o.Source, err)
			continue
		}
		if !equality.Semantic.DeepEqual(got.Object, u.Object) {
			t.Errorf("%s: the render's source gives %v, the render gave %v", o.Source, got.Object, u.Object)
		}
	}
}

// fetchTrap makes a fetch by kustomize visible instead of letting it out:
// git is a script that records its arguments and fails, and HTTP and
// HTTPS go through a proxy that records each request and refuses it.
// kustomize fetches with git (remote bases) and with net/http's default
// transport (remote files); a render must reach neither.
type fetchTrap struct {
	gitLog string
	mu     sync.Mutex
	urls   []string
}

func newFetchTrap(f *testing.F) *fetchTrap {
	trap := &fetchTrap{}
	bin := f.TempDir()
	trap.gitLog = filepath.Join(bin, "git.log")
	script := "#!/bin/sh\necho \"$@\" >> '" + trap.gitLog + "'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "git"), []byte(script), 0o755); err != nil {
		f.Fatal(err)
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trap.mu.Lock()
		trap.urls = append(trap.urls, r.Method+" "+r.Host+r.URL.RequestURI())
		trap.mu.Unlock()
		http.Error(w, "the agent fetches nothing", http.StatusBadGateway)
	}))
	f.Cleanup(proxy.Close)
	f.Setenv("PATH", bin)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		f.Setenv(k, proxy.URL)
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		f.Setenv(k, "")
	}
	return trap
}

// fetched returns what was fetched since it was last called.
func (trap *fetchTrap) fetched() []string {
	trap.mu.Lock()
	got := trap.urls
	trap.urls = nil
	trap.mu.Unlock()
	if data, err := os.ReadFile(trap.gitLog); err == nil {
		got = append(got, "git "+strings.TrimSpace(string(data)))
		_ = os.Remove(trap.gitLog) // a stale log would fail the next input
	}
	return got
}
