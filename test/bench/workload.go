package main

// The objects under test: ConfigMaps and Deployments spread over namespaces
// and partitioned into Bundles. The same set is applied by the agent (as
// Bundles), by the ceiling (client-go server-side apply) and by kubectl
// (manifest files), each into namespaces of its own.

import (
	"fmt"
	"strings"

	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

const (
	// bundleNamespace holds the Bundles: the agent's --namespace.
	bundleNamespace = "bench"
	// imageV1 is the image every Deployment declares; an edit sets imageV2.
	imageV1 = "registry.example/app:v1"
	imageV2 = "registry.example/app:v2"
	// replicas every Deployment declares; a scale edit sets editReplicas.
	replicas     = 2
	editReplicas = 3
)

// bundleSizes are the ConfigMaps per Bundle, by namespace index (cycled):
// the default 1,000 ConfigMaps per namespace become Bundles of 1,000, 500,
// 250 and 100, so the set mixes large and small Bundles.
var bundleSizes = []int{1000, 500, 250, 100}

// workload is the set of objects one run applies.
type workload struct {
	configMaps  int
	deployments int
	namespaces  int
	bundles     []bundleSpec
}

// bundleSpec is one Bundle: ConfigMaps and Deployments (by index) in one
// namespace (by index).
type bundleSpec struct {
	name string
	ns   int
	cms  []int
	deps []int
}

func (b bundleSpec) objects() int { return len(b.cms) + len(b.deps) }

// newWorkload spreads configMaps contiguously and deployments round-robin
// over namespaces, then cuts each namespace into Bundles of
// bundleSizes[ns%4] ConfigMaps (at most maxPerBundle); a namespace's
// Deployments go into its first Bundle.
func newWorkload(configMaps, deployments, namespaces, maxPerBundle int) *workload {
	w := &workload{configMaps: configMaps, deployments: deployments, namespaces: namespaces}
	perNS := (configMaps + namespaces - 1) / namespaces
	for ns := 0; ns < namespaces; ns++ {
		size := min(bundleSizes[ns%len(bundleSizes)], maxPerBundle)
		var deps []int
		for d := ns; d < deployments; d += namespaces {
			deps = append(deps, d)
		}
		first, last := ns*perNS, min((ns+1)*perNS, configMaps)
		for k := 0; first < last || (k == 0 && len(deps) > 0); k++ {
			b := bundleSpec{name: fmt.Sprintf("b%02d-%02d", ns, k), ns: ns}
			for i := first; i < min(first+size, last); i++ {
				b.cms = append(b.cms, i)
			}
			first += size
			if k == 0 {
				b.deps = deps
			}
			w.bundles = append(w.bundles, b)
		}
	}
	return w
}

// objects is the number of objects in every Bundle together.
func (w *workload) objects() int { return w.configMaps + w.deployments }

// nsOfCM and nsOfDep return the namespace index of an object.
func (w *workload) nsOfCM(i int) int {
	return i / ((w.configMaps + w.namespaces - 1) / w.namespaces)
}
func (w *workload) nsOfDep(d int) int { return d % w.namespaces }

// nsName names namespace ns of a set ("dw" for the agent, "ceil", "kctl").
func nsName(prefix string, ns int) string { return fmt.Sprintf("%s-%02d", prefix, ns) }

func cmName(i int) string     { return fmt.Sprintf("cm-%05d", i) }
func cmValue(i int) string    { return fmt.Sprintf("value-%d", i) }
func depName(d int) string    { return fmt.Sprintf("app-%03d", d) }
func (w *workload) size() int { return len(w.bundles) }

// yaml renders a Bundle's objects as one multi-document file. With a
// namespace, every object names it (kubectl's files); without, the Bundle's
// defaultNamespace applies.
func (b bundleSpec) yaml(namespace string) string {
	var sb strings.Builder
	nsField := ""
	if namespace != "" {
		nsField = ", namespace: " + namespace
	}
	for _, i := range b.cms {
		fmt.Fprintf(&sb, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s%s}\ndata: {key: %s}\n---\n", cmName(i), nsField, cmValue(i))
	}
	for _, d := range b.deps {
		n := depName(d)
		fmt.Fprintf(&sb, `apiVersion: apps/v1
kind: Deployment
metadata: {name: %s%s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      containers:
      - {name: app, image: %q}
---
`, n, nsField, replicas, n, n, imageV1)
	}
	return sb.String()
}

// cmApply is ConfigMap i as an apply configuration.
func cmApply(name, namespace, value string, labels map[string]string) *corev1ac.ConfigMapApplyConfiguration {
	return corev1ac.ConfigMap(name, namespace).WithLabels(labels).WithData(map[string]string{"key": value})
}

// depApply is Deployment d as an apply configuration, the same as in yaml.
func depApply(d int, namespace string) *appsv1ac.DeploymentApplyConfiguration {
	n := depName(d)
	return appsv1ac.Deployment(n, namespace).WithSpec(appsv1ac.DeploymentSpec().
		WithReplicas(replicas).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{"app": n})).
		WithTemplate(corev1ac.PodTemplateSpec().
			WithLabels(map[string]string{"app": n}).
			WithSpec(corev1ac.PodSpec().WithContainers(corev1ac.Container().WithName("app").WithImage(imageV1)))))
}
