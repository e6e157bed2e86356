// Package drift is driftwatch's control loop and drift engine: it compares
// the field set driftwatch last applied with the one the server says it owns
// now (managedFields), names the fields and the manager that took them
// without an API call, corrects or reports the drift, detects fights with
// other controllers and re-syncs Bundles whose pods crash.
package drift
