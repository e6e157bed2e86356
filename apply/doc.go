// Package apply writes desired objects to the target cluster with
// server-side apply under driftwatch's field manager: staged (Namespaces and
// CRDs first), with bounded concurrency, skipping objects whose applied state
// is unchanged, pruning owned objects that left a Bundle, and recording per
// object the field set and resourceVersion the server returned.
package apply
