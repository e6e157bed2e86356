package manifests

import (
	_ "embed"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

//go:embed deploy/crd.yaml
var crdYAML []byte

// CRD returns the bundles.driftwatch.io CustomResourceDefinition.
func CRD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crdYAML, &u.Object); err != nil {
		panic("manifests: embedded CRD is invalid: " + err.Error()) // a build defect, caught by tests
	}
	return u
}
