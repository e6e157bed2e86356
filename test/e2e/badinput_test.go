package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/manifests"
)

func TestBadInputIsReportedAndTheRestApplied(t *testing.T) {
	ns, _ := setup(t)
	createBundle(t, ns, "healthy", webBundle("defaultNamespace: "+ns))

	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write(bytes.Repeat([]byte("a"), manifests.MaxDecodedBytes+1))
	zw.Close()
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
- name: bomb.yaml
  encoding: base64+gzip
  content: ` + base64.StdEncoding.EncodeToString(bomb.Bytes()) + `
`
	createBundle(t, ns, "bad", bad)
	want := map[string]string{
		"broken.yaml#1":  "invalid YAML",
		"good.yaml#2":    "declared twice (also in good.yaml#1)",
		"unknown.yaml#1": "unknown kind example.com/v1, Kind=Gadget",
		"cluster.yaml#1": "cluster-scoped, but the bundle sets targetNamespace",
		"Bad_Name":       "Invalid value",
		"bomb.yaml":      "exceed",
	}
	b := waitBundle(t, ns, "bad", "every bad object reported", func(b *manifests.Bundle) bool {
		cond := ""
		for _, c := range b.Status.Conditions {
			if c.Type == manifests.ConditionSynced && c.Status == metav1.ConditionFalse {
				cond = c.Message
			}
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
