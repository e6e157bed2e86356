// Package ownership decides which Bundle owns which object: the ApplySet
// labels (KEP-3659) and the driftwatch label stamped on every owned object,
// the per-Bundle inventory, and the rules for adoption and for objects that
// another Bundle already claims.
package ownership
