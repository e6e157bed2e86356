// Package apply writes desired objects to the target cluster with
// server-side apply under driftwatch's field manager: prepared (namespace
// settled by one rule, reserved objects refused, ownership stamped,
// hashed), staged (Namespaces and CRDs first, then the rest once the CRDs
// are Established), with a bound on applies in flight shared by every
// caller, and recording per object the field set and resourceVersion the
// server returned. Deciding what to skip and what to prune is the caller's
// (drift): apply deletes what it is told to.
package apply
