// Package drift is driftwatch's controller: the Bundle queue and one
// Bundle's sync (render, admit, own and apply stage by stage, record,
// prune), the correction of drift as soon as an informer event shows it,
// fights with other controllers, the re-sync of Bundles whose Pods crash,
// and the status written back to the source cluster. What it decides from
// lives in packages of its own below it: drift/detect finds drift from
// managedFields, drift/status computes a Bundle's status, drift/events
// writes events on the owned objects, drift/depends resolves dependsOn.
// docs/architecture.md says which goroutine may write what.
package drift
