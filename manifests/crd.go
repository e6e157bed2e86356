package manifests

import (
	_ "embed"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

//go:embed deploy/crd.yaml
var crdYAML []byte

//go:embed deploy/crd-restriction.yaml
var restrictionCRDYAML []byte

// CRD returns the bundles.driftwatch.io CustomResourceDefinition.
func CRD() *unstructured.Unstructured { return mustCRD(crdYAML) }

// CRDs returns every CustomResourceDefinition of the API: Bundles and
// BundleRestrictions.
func CRDs() []*unstructured.Unstructured {
	return []*unstructured.Unstructured{mustCRD(crdYAML), mustCRD(restrictionCRDYAML)}
}

func mustCRD(data []byte) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		panic("manifests: embedded CRD is invalid: " + err.Error()) // a build defect, caught by tests
	}
	return u
}
