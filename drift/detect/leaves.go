package detect

import (
	"fmt"
	"strconv"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/driftwatch/driftwatch/manifests"
)

// NotOwned returns the declared map leaves of obj (declaredLeaves) that
// owned does not hold: after a restart, the fields of an object applied
// with this content that another manager took while no agent watched.
func NotOwned(owned *fieldpath.Set, obj map[string]any) *fieldpath.Set {
	missing := &fieldpath.Set{}
	for _, p := range declaredLeaves(obj) {
		if !ownedOrAtomic(owned, p) {
			missing.Insert(p)
		}
	}
	return missing
}

// ownedOrAtomic reports whether p, or a map above it, is in the set: an
// atomic map (a LabelSelector) is owned as a whole, its keys are not listed.
func ownedOrAtomic(owned *fieldpath.Set, p fieldpath.Path) bool {
	for i := len(p); i > 0; i-- {
		if owned.Has(p[:i]) {
			return true
		}
	}
	return false
}

// declaredLeaves returns the paths of the scalar values under maps of an
// object: what an apply of it owns, lists aside. Identity fields and status
// are not owned through an apply of the main resource.
func declaredLeaves(obj map[string]any) []fieldpath.Path {
	var out []fieldpath.Path
	var walk func(prefix []any, m map[string]any)
	walk = func(prefix []any, m map[string]any) {
		for k, v := range m {
			path := append(append([]any(nil), prefix...), k)
			switch v := v.(type) {
			case map[string]any:
				walk(path, v)
			case []any, nil:
				// Lists need their keys from the schema; nulls own nothing.
			default:
				if p, err := fieldpath.MakePath(path...); err == nil {
					out = append(out, p)
				}
			}
		}
	}
	for k, v := range obj {
		m, isMap := v.(map[string]any)
		switch {
		case k == "metadata" && isMap:
			for _, sub := range []string{"labels", "annotations"} {
				if mm, ok := m[sub].(map[string]any); ok {
					walk([]any{"metadata", sub}, mm)
				}
			}
		case k == "apiVersion" || k == "kind" || k == "status":
		case isMap:
			walk([]any{k}, m)
		default:
			if p, err := fieldpath.MakePath(k); err == nil && v != nil {
				if _, isList := v.([]any); !isList {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// Newer reports whether resourceVersion a is later than b. Resource
// versions are opaque in the API conventions, but kube-apiserver's are etcd
// revisions, increasing integers; when either does not parse (an
// aggregated API with its own storage), any difference counts as newer.
func Newer(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return x > y
}

// IgnoreSuggestion is the spec.drift.ignore rule that lets another
// manager own field of ref, as the agent suggests it in events.
func IgnoreSuggestion(ref manifests.ObjectRef, field string) string {
	return fmt.Sprintf("{group: %q, kind: %q, name: %q, fieldPaths: [%q]}", ref.Group, ref.Kind, ref.Name, field)
}
