package commands

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func secret(data map[string]any, stringData map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s"}}}
	if data != nil {
		u.Object["data"] = data
	}
	if stringData != nil {
		u.Object["stringData"] = stringData
	}
	return u
}

// driftwatch diff never prints a Secret's values, plain or base64, and
// still shows which keys changed.
func TestDiffMasksSecretValues(t *testing.T) {
	live := secret(map[string]any{"same": "c2FtZS1tYXJrZXI=", "changed": "b2xkLW1hcmtlcg==", "gone": "Z29uZS1tYXJrZXI="}, nil)
	merged := secret(map[string]any{"same": "c2FtZS1tYXJrZXI=", "changed": "bmV3LW1hcmtlcg==", "added": "YWRkZWQtbWFya2Vy"},
		map[string]any{"plain": "plain-marker"})
	out, err := unifiedDiff("Secret ns/s", live, merged)
	if err != nil {
		t.Fatal(err)
	}
	for _, secretText := range []string{"marker", "c2FtZS1tYXJrZXI", "b2xkLW1hcmtlcg", "bmV3LW1hcmtlcg", "Z29uZS1tYXJrZXI", "YWRkZWQtbWFya2Vy"} {
		if strings.Contains(out, secretText) {
			t.Errorf("the diff shows a secret value (%s):\n%s", secretText, out)
		}
	}
	for _, want := range []string{"-  changed: '*** (before)'", "+  changed: '*** (after)'", "-  gone: '***'", "+  added: '***'", "+  plain: '***'"} {
		if !strings.Contains(out, want) {
			t.Errorf("the diff lacks %q:\n%s", want, out)
		}
	}
	if live.Object["data"].(map[string]any)["same"] != "c2FtZS1tYXJrZXI=" {
		t.Error("masking changed the caller's object")
	}
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}, "data": map[string]any{"k": "visible"}}}
	out, _ = unifiedDiff("ConfigMap ns/c", nil, cm)
	if !strings.Contains(out, "visible") {
		t.Errorf("a ConfigMap's values are masked:\n%s", out)
	}
}
