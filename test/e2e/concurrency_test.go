package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// Syncs of several Bundles run at once. One that ends must not stop the
// informer that another, still applying, has just started for a kind no
// recorded state uses yet: that Bundle would stay NotReady ("not in the
// cache") and its drift would go unseen.
func TestConcurrentSyncsKeepEachOthersWatches(t *testing.T) {
	ns, _ := setup(t)
	var big strings.Builder
	big.WriteString("defaultNamespace: " + ns + "\nresources:\n- name: app.yaml\n  content: |\n")
	big.WriteString(`    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: nginx:1}]}
`)
	for i := range 100 {
		fmt.Fprintf(&big, "    ---\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: big-%d}\n", i)
	}
	createBundle(t, ns, "big", big.String())
	for i := range 3 {
		createBundle(t, ns, fmt.Sprintf("small-%d", i), fmt.Sprintf(
			"defaultNamespace: %s\nresources:\n- name: cm.yaml\n  content: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: small-%d}\n", ns, i))
	}
	for i := range 3 {
		waitBundle(t, ns, fmt.Sprintf("small-%d", i), "Ready", ready)
	}
	waitBundle(t, ns, "big", "Ready", ready)
	kubectl(t, "scale", "-n", ns, "deployment/web", "--replicas=3")
	waitEvent(t, ns, "big", "DriftCorrected", ".spec.replicas", "kubectl/scale")
}
