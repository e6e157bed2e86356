package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/test/cluster"
)

// TestSecretValuesAreNeverShown: a Secret is applied, edited by someone
// else (drift), corrected, and diffed; its value — a marker, plain or
// base64 — appears in none of what driftwatch shows: the Bundle's status,
// events, the agent's log at its highest verbosity (asked for -v=9, capped
// where client-go would log request bodies), metrics, and `driftwatch
// diff`.
func TestSecretValuesAreNeverShown(t *testing.T) {
	ns, agent := setup(t, "-v", "9")
	const marker = "s3cr3t-marker-7f1e"
	const theirs = "intruder-marker-93ab"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	spec := fmt.Sprintf(`
defaultNamespace: %s
resources:
- name: secret.yaml
  content: |
    apiVersion: v1
    kind: Secret
    metadata: {name: creds}
    data: {token: %s}
    stringData: {password: %s}
`, ns, b64(marker), marker+"-pw")
	createBundle(t, ns, "secret", spec)
	waitBundle(t, ns, "secret", "Ready", ready)

	// Drift: another manager changes both keys; the agent takes them back.
	_, err := cp.Client().CoreV1().Secrets(ns).Patch(t.Context(), "creds", types.MergePatchType,
		fmt.Appendf(nil, `{"data":{"token":%q,"password":%q}}`, b64(theirs), b64(theirs)), metav1.PatchOptions{FieldManager: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "secret", "DriftCorrected", "Secret/"+ns+"/creds", "intruder")
	waitFor(t, "the Secret restored", func() (bool, string) {
		s, err := cp.Client().CoreV1().Secrets(ns).Get(t.Context(), "creds", metav1.GetOptions{})
		return err == nil && string(s.Data["token"]) == marker, fmt.Sprint(err)
	})

	// diff against a changed value: the change shows, masked.
	file := filepath.Join(t.TempDir(), "bundle.yaml")
	changed := strings.Replace(spec, b64(marker), b64(marker+"-next"), 1)
	content := "apiVersion: driftwatch.io/v1alpha1\nkind: Bundle\nmetadata: {name: secret, namespace: " + ns + "}\nspec:\n" + indent(changed)
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	diff, diffErr, code := runCLI(t, "diff", "-f", file, "--kubeconfig", cp.Kubeconfig(cluster.AdminUser), "--namespace", ns)
	if code != 1 || !strings.Contains(diff, "***") {
		t.Fatalf("diff of a changed Secret: exit %d, want 1 and a masked change\n%s\n%s", code, diff, diffErr)
	}

	b := getBundle(t, ns, "secret")
	status, err := yaml.Marshal(b.Status)
	if err != nil {
		t.Fatal(err)
	}
	list, err := cp.Client().EventsV1().Events("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var events strings.Builder
	for _, e := range list.Items {
		fmt.Fprintln(&events, e.Reason, e.Note)
	}
	log, err := os.ReadFile(agent.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "/secrets/creds") {
		t.Fatal("the agent's log does not mention the Secret at all: the check below would prove nothing")
	}
	outputs := map[string]string{"status": string(status), "events": events.String(), "log": string(log),
		"metrics": agent.scrape(t), "diff": diff + diffErr}
	for what, out := range outputs {
		for _, secret := range []string{marker, b64(marker), marker + "-pw", b64(marker + "-pw"), theirs, b64(theirs), b64(marker + "-next")} {
			if strings.Contains(out, secret) {
				t.Errorf("the %s shows a Secret value (%q)", what, secret)
			}
		}
	}
}
