// Package manifests defines the Bundle API (driftwatch.io/v1alpha1) and its
// CRD, and turns a Bundle's resources — raw manifests, a Kustomize tree,
// target customisations chosen by the cluster's labels — into the desired
// objects. It imports no other driftwatch package. Its deploy/ directory holds
// the YAML that runs the agent itself.
package manifests
