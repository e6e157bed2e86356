package manifests

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// TargetCustomization changes a Bundle for the clusters it selects. The
// first customization that matches the cluster is applied; one with
// neither clusterSelector nor clusterName matches every cluster (a
// default, last in the list).
type TargetCustomization struct {
	Name string `json:"name"`
	// ClusterSelector selects clusters by their labels.
	ClusterSelector *metav1.LabelSelector `json:"clusterSelector,omitempty"`
	// ClusterName selects one cluster by its name (--cluster-name).
	ClusterName string `json:"clusterName,omitempty"`

	DefaultNamespace string `json:"defaultNamespace,omitempty"`
	TargetNamespace  string `json:"targetNamespace,omitempty"`
	// Kustomize picks another kustomization directory (an overlay).
	Kustomize *KustomizeSpec `json:"kustomize,omitempty"`
	// Helm changes the chart, repo or version where set, and its values
	// are deep-merged over the Bundle's.
	Helm *HelmSpec `json:"helm,omitempty"`
	// YAML overlays are patch files among the resources, applied to the
	// rendered objects (raw manifests or Kustomize).
	YAML *YAMLSpec `json:"yaml,omitempty"`
	// NamespaceLabels and NamespaceAnnotations are set on the target
	// namespace (targetNamespace, else defaultNamespace).
	NamespaceLabels      map[string]string `json:"namespaceLabels,omitempty"`
	NamespaceAnnotations map[string]string `json:"namespaceAnnotations,omitempty"`
	// DoNotDeploy: the Bundle is not applied on these clusters; what it
	// applied there before is pruned.
	DoNotDeploy bool `json:"doNotDeploy,omitempty"`
}

// YAMLSpec lists overlay files.
type YAMLSpec struct {
	// Overlays are resources, each of patches: strategic merge patches
	// (a partial object naming its target by apiVersion, kind, name and
	// namespace) or JSON 6902 patches (kind JSONPatch, see Overlay).
	Overlays []string `json:"overlays,omitempty"`
}

// Customized is what the chosen target customization adds to the
// effective spec beyond the fields it overrides. It is set by Effective,
// never read from a Bundle.
type Customized struct {
	// Name of the customization chosen ("" when none matched).
	Name                 string
	Overlays             []string
	NamespaceLabels      map[string]string
	NamespaceAnnotations map[string]string
	DoNotDeploy          bool
}

// validate checks the customizations: unique names, selectors that parse.
func validateCustomizations(tcs []TargetCustomization) error {
	seen := map[string]bool{}
	for i, tc := range tcs {
		if tc.Name == "" {
			return fmt.Errorf("spec.targetCustomizations[%d]: a name is required", i)
		}
		if seen[tc.Name] {
			return fmt.Errorf("spec.targetCustomizations[%d]: the name %q is used twice", i, tc.Name)
		}
		seen[tc.Name] = true
		if tc.ClusterSelector != nil {
			if _, err := metav1.LabelSelectorAsSelector(tc.ClusterSelector); err != nil {
				return fmt.Errorf("spec.targetCustomizations[%d] (%s): clusterSelector: %w", i, tc.Name, err)
			}
		}
	}
	return nil
}

// matches reports whether tc selects cluster.
func (tc *TargetCustomization) matches(cluster Cluster) bool {
	if tc.ClusterName != "" && tc.ClusterName != cluster.Name {
		return false
	}
	if tc.ClusterSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(tc.ClusterSelector)
		if err != nil || !sel.Matches(labels.Set(cluster.Labels)) {
			return false
		}
	}
	return true
}

// customize returns spec with the first customization that matches
// cluster merged in.
func customize(spec BundleSpec, cluster Cluster) (BundleSpec, error) {
	if err := validateCustomizations(spec.TargetCustomizations); err != nil {
		return spec, err
	}
	var tc *TargetCustomization
	for i := range spec.TargetCustomizations {
		if spec.TargetCustomizations[i].matches(cluster) {
			tc = &spec.TargetCustomizations[i]
			break
		}
	}
	spec.TargetCustomizations = nil
	if tc == nil {
		return spec, nil
	}
	spec.Customized = Customized{Name: tc.Name, NamespaceLabels: tc.NamespaceLabels,
		NamespaceAnnotations: tc.NamespaceAnnotations, DoNotDeploy: tc.DoNotDeploy}
	if tc.YAML != nil {
		spec.Customized.Overlays = tc.YAML.Overlays
	}
	if tc.DefaultNamespace != "" {
		spec.DefaultNamespace = tc.DefaultNamespace
	}
	if tc.TargetNamespace != "" {
		spec.TargetNamespace = tc.TargetNamespace
	}
	if tc.Kustomize != nil {
		if spec.Kustomize == nil {
			return spec, fmt.Errorf("spec.targetCustomizations (%s): kustomize needs spec.kustomize", tc.Name)
		}
		k := *tc.Kustomize
		spec.Kustomize = &k
	}
	if tc.Helm != nil {
		if spec.Helm == nil {
			return spec, fmt.Errorf("spec.targetCustomizations (%s): helm needs spec.helm", tc.Name)
		}
		h, err := mergeHelm(*spec.Helm, *tc.Helm)
		if err != nil {
			return spec, fmt.Errorf("spec.targetCustomizations (%s): %w", tc.Name, err)
		}
		spec.Helm = &h
	}
	if len(spec.Customized.Overlays) > 0 && spec.Helm != nil {
		return spec, fmt.Errorf("spec.targetCustomizations (%s): yaml overlays apply to manifests and Kustomize; give a Helm chart values instead", tc.Name)
	}
	return spec, nil
}

// mergeHelm lays o over base: chart, repo and version where o sets them,
// values deep-merged (o wins key by key), lists appended.
func mergeHelm(base, o HelmSpec) (HelmSpec, error) {
	out := base
	if o.Chart != "" {
		out.Chart = o.Chart
	}
	if o.Repo != "" {
		out.Repo = o.Repo
	}
	if o.Version != "" {
		out.Version = o.Version
	}
	if o.ReleaseName != "" {
		out.ReleaseName = o.ReleaseName
	}
	out.ValuesFiles = append(append([]string(nil), base.ValuesFiles...), o.ValuesFiles...)
	out.ValuesFrom = append(append([]ValuesReference(nil), base.ValuesFrom...), o.ValuesFrom...)
	v, err := deepMerge(base.Values, o.Values)
	if err != nil {
		return out, err
	}
	out.Values = v
	return out, nil
}

// deepMerge returns a copy of a with b merged in: maps merged key by key,
// anything else replaced.
func deepMerge(a, b map[string]any) (map[string]any, error) {
	if a == nil && b == nil {
		return nil, nil
	}
	out, err := copyJSON(a)
	if err != nil {
		return nil, err
	}
	for k, bv := range b {
		if bm, ok := bv.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				m, err := deepMerge(am, bm)
				if err != nil {
					return nil, err
				}
				out[k] = m
				continue
			}
		}
		out[k] = bv
	}
	return out, nil
}

func copyJSON(m map[string]any) (map[string]any, error) {
	out := map[string]any{}
	if m == nil {
		return out, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, errors.New("values: " + err.Error())
	}
	return out, nil
}

// KeepAnnotation on a desired object ("true"): it is never pruned nor
// deleted with the Bundle. The target namespace a customization labels
// carries it: the Bundle labels that namespace, it does not own its
// contents.
const KeepAnnotation = "driftwatch.io/keep"

// addNamespaceMetadata sets the customization's labels and annotations on
// the target namespace: on its object if the Bundle declares it, else on
// a Namespace object of its own (KeepAnnotation).
func addNamespaceMetadata(out *Output, spec *BundleSpec, c Customized) error {
	ns := spec.TargetNamespace
	if ns == "" {
		ns = spec.DefaultNamespace
	}
	if ns == "" {
		return fmt.Errorf("spec.targetCustomizations (%s): namespaceLabels and namespaceAnnotations need a targetNamespace or defaultNamespace", c.Name)
	}
	src := namespaceSource{inner: out.Source, name: ns, labels: c.NamespaceLabels, annotations: c.NamespaceAnnotations}
	declared := false
	for _, o := range out.Objects {
		if src.is(o.Object) {
			if spec.Helm != nil {
				// Helm applies the chart's Namespace as the same manager,
				// without these labels: they would flap with every upgrade.
				return fmt.Errorf("spec.targetCustomizations (%s): the chart declares namespace %s; set its labels and annotations through the chart's values", c.Name, ns)
			}
			src.merge(o.Object)
			declared = true
		}
	}
	if !declared {
		obj, _ := src.Object(Locator{Resource: namespaceLocator})
		out.Objects = append(out.Objects, Object{Object: obj, Source: "targetCustomizations[" + c.Name + "].namespaceLabels", Locator: Locator{Resource: namespaceLocator}})
	}
	out.Source = src
	return nil
}

// namespaceLocator locates the Namespace object a customization adds.
const namespaceLocator = -1

// namespaceSource hands out objects with the target namespace's labels
// and annotations merged in, and the added Namespace itself.
type namespaceSource struct {
	inner               Source
	name                string
	labels, annotations map[string]string
}

func (s namespaceSource) is(obj *unstructured.Unstructured) bool {
	return obj.GetKind() == "Namespace" && obj.GroupVersionKind().Group == "" && obj.GetName() == s.name
}

func (s namespaceSource) merge(obj *unstructured.Unstructured) {
	obj.SetLabels(withEntries(obj.GetLabels(), s.labels))
	if len(s.annotations) > 0 {
		obj.SetAnnotations(withEntries(obj.GetAnnotations(), s.annotations))
	}
}

// withEntries returns m (a fresh map if nil) with extra copied in.
func withEntries(m, extra map[string]string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, extra)
	return m
}

func (s namespaceSource) Object(loc Locator) (*unstructured.Unstructured, error) {
	if loc.Resource == namespaceLocator {
		obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": s.name}}}
		s.merge(obj)
		obj.SetAnnotations(withEntries(obj.GetAnnotations(), map[string]string{KeepAnnotation: "true"}))
		return obj, nil
	}
	obj, err := s.inner.Object(loc)
	if err != nil {
		return nil, err
	}
	if s.is(obj) {
		s.merge(obj)
	}
	return obj, nil
}
