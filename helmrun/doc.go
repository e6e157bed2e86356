// Package helmrun renders and runs a Bundle's Helm chart as a real Helm
// release: loading the chart (inline, HTTP repository, OCI, or a path in the
// Bundle), merging values and valuesFrom, and install, upgrade, rollback and
// uninstall.
package helmrun
