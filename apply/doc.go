// Package apply writes desired objects to the target cluster with
// server-side apply under driftwatch's field manager. Prepare settles each
// rendered object (resource resolved, namespace placed by the one rule of
// TargetOf, reserved objects refused, ownership stamped, content hashed);
// Stages splits a Bundle into the stages it is applied in (Namespaces and
// CRDs, then the rest); ApplyAll writes a stage's objects concurrently,
// within a bound on applies in flight that every caller shares and that
// honours the context, and returns a ChangeSet with, per object, the field
// set and resourceVersion the server returned; WaitReady waits for any set
// through kstatus. It takes no function from its caller: deciding what to
// skip, what to admit and what to prune is the caller's (drift), which
// hands apply only the objects to write or delete.
package apply
