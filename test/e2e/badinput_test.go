package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

// TestBadInputIsReportedAndTheRestApplied: broken and hostile documents
// are reported each with its file, document and reason, the rest of their
// Bundle is applied; a Bundle beyond the agent's limits (a gzip bomb, too
// many objects) is refused whole and says which limit; other Bundles go on.
func TestBadInputIsReportedAndTheRestApplied(t *testing.T) {
	ns, agent := setup(t, "--max-bundle-objects=30")
	createBundle(t, ns, "healthy", webBundle("defaultNamespace: "+ns))

	gzipped := func(b []byte) string {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		zw.Close()
		return base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	indent := func(s string) string {
		return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
	}
	laughs := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: laughs}\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	for i, prev := 'b', 'a'; i <= 'j'; i, prev = i+1, i {
		laughs += fmt.Sprintf("  %c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n", i, i, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	// A 5 MiB document: decoded within the limits, refused by the API
	// server (a ConfigMap holds at most 1 MiB).
	huge := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: huge}\ndata: {k: %s}\n", strings.Repeat("x", 5<<20))
	bad := `
defaultNamespace: ` + ns + `
targetNamespace: ` + ns + `
resources:
- name: good.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: good}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: good}
    data: {again: "yes"}
- name: broken.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: broken
- name: unknown.yaml
  content: |
    apiVersion: example.com/v1
    kind: Gadget
    metadata: {name: g}
- name: cluster.yaml
  content: |
    apiVersion: v1
    kind: Namespace
    metadata: {name: not-allowed}
- name: rejected.yaml
  content: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: Bad_Name}
- name: random.yaml
  encoding: base64
  content: ` + base64.StdEncoding.EncodeToString([]byte("\x00\x01\xfe\xff{[: not yaml")) + `
- name: notbase64.yaml
  encoding: base64
  content: "%%% not base64"
- name: notgzip.yaml
  encoding: base64+gzip
  content: ` + base64.StdEncoding.EncodeToString([]byte("plain text")) + `
- name: nested.yaml
  content: "` + strings.Repeat("[", 10000) + `"
- name: laughs.yaml
  content: |
` + indent(laughs) + `- name: nokind.yaml
  content: |
    apiVersion: v1
    metadata: {name: nokind}
- name: huge.yaml
  encoding: base64+gzip
  content: ` + gzipped([]byte(huge)) + `
`
	createBundle(t, ns, "bad", bad)
	want := map[string]string{
		"broken.yaml#1":             "invalid YAML",
		"good.yaml#2":               "declared twice (also in good.yaml#1)",
		"unknown.yaml#1":            "unknown kind example.com/v1, Kind=Gadget",
		"cluster.yaml#1":            "cluster-scoped, but the bundle sets targetNamespace",
		"Bad_Name":                  "Invalid value",
		"random.yaml#1":             "invalid YAML",
		"notbase64.yaml":            "invalid base64",
		"notgzip.yaml":              "invalid gzip",
		"nested.yaml#1":             "invalid YAML",
		"laughs.yaml#1":             "invalid YAML",
		"nokind.yaml#1":             "kind",
		"ConfigMap/" + ns + "/huge": "Request entity too large",
	}
	b := waitBundle(t, ns, "bad", "every bad object reported", func(b *manifests.Bundle) bool {
		cond := "" // what Synced says, and, as its message is capped, each object's
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && c.Status == metav1.ConditionFalse {
				cond = c.Message
			}
		}
		for _, r := range b.Status.Resources {
			cond += "; " + r.Message
		}
		for where, what := range want {
			if !containsBoth(cond, where, what) {
				return false
			}
		}
		return true
	})
	if cm, ok := configMap(t, ns, "good"); !ok || cm.Data["again"] != "" {
		t.Errorf("the good object: applied %v, data %v (want applied, first declaration)", ok, cm)
	}
	if isTrue(b, manifests.ConditionReady) {
		t.Error("a bundle with bad input is Ready")
	}
	waitBundle(t, ns, "healthy", "Ready beside the bad bundle", ready)

	// Beyond the limits: refused whole, saying which limit.
	bomb := gzipped(bytes.Repeat([]byte("a"), manifests.MaxDecodedBytes+1))
	createBundle(t, ns, "bomb", "defaultNamespace: "+ns+"\nresources:\n- {name: ok.yaml, content: 'apiVersion: v1\n\n  kind: ConfigMap\n\n  metadata: {name: beside-the-bomb}'}\n- {name: bomb.yaml, encoding: base64+gzip, content: "+bomb+"}\n")
	var many strings.Builder
	for i := range 31 {
		fmt.Fprintf(&many, "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: many-%d}\n", i)
	}
	createBundle(t, ns, "many", "defaultNamespace: "+ns+"\nresources:\n- name: many.yaml\n  content: |\n"+many.String())
	for name, want := range map[string]string{
		"bomb": "its resources exceed 8388608 bytes decoded (at bomb.yaml); the agent's limit is --max-bundle-bytes",
		"many": "it renders 31 documents, more than 30; the agent's limit is --max-bundle-objects",
	} {
		waitBundle(t, ns, name, "refused: "+want, func(b *manifests.Bundle) bool {
			c := meta.FindStatusCondition(b.Status.Conditions, manifests.ConditionSynced)
			return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, want)
		})
	}
	if _, ok := configMap(t, ns, "beside-the-bomb"); ok {
		t.Error("an object of a Bundle beyond the limits was applied")
	}
	if agent.exited() {
		t.Fatal("the agent exited")
	}
	waitBundle(t, ns, "healthy", "still Ready", ready)

	createBundle(t, ns, "empty", "defaultNamespace: "+ns+"\nresources: []")
	waitBundle(t, ns, "empty", "reported as empty", func(b *manifests.Bundle) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && strings.Contains(c.Message, "declares no objects") {
				return true
			}
		}
		return false
	})
}

func containsBoth(s, a, b string) bool {
	for _, part := range strings.Split(s, "; ") {
		if strings.Contains(part, a) && strings.Contains(part, b) {
			return true
		}
	}
	return false
}
