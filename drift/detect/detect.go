package detect

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// Cause is why an object no longer holds what was applied.
type Cause string

// The causes of drift. Their lower-case forms name the culprit in status,
// events and metrics when no field manager holds the lost fields.
const (
	// CauseChanged: other field managers hold fields we applied.
	CauseChanged Cause = "Changed"
	// CauseRemoved: fields we applied were removed; nobody holds them.
	CauseRemoved Cause = "Removed"
	// CauseDeleted: the object is gone.
	CauseDeleted Cause = "Deleted"
	// CausePodFailed: an owned bare Pod failed and never runs again; it is
	// deleted, and its deletion re-creates it.
	CausePodFailed Cause = "PodFailed"
)

// culprit is how a cause without a field manager is named to users
// ("deleted", "removed", "failed"): status.resources[].changedBy, events,
// and the manager label of driftwatch_drift_detected_total.
var culprit = map[Cause]string{CauseRemoved: "removed", CauseDeleted: "deleted", CausePodFailed: "failed"}

// Finding is the drift of one object.
type Finding struct {
	Cause Cause
	// Fields that we applied and no longer own, as field paths
	// (".spec.replicas"), sorted; only the outermost lost path of a subtree.
	Fields []string
	// Managers that now hold them (with "/subresource" when not the main
	// resource), sorted; empty unless Cause is CauseChanged.
	Managers []string
	// Foreign are list items that another manager added to a list in
	// which we lost an item: a changed key (a Service port 443 → 444, a
	// renamed container) is, for server-side apply, our item removed and
	// theirs added. Re-applying cannot remove theirs, and for Services it
	// is even rejected (duplicate port name), so they are removed first.
	Foreign []fieldpath.Path
}

// Drifted reports whether anything drifted.
func (f Finding) Drifted() bool { return len(f.Fields) > 0 }

// Culprits are the managers that hold the lost fields, or the cause's
// name when none does.
func (f Finding) Culprits() []string {
	if len(f.Managers) > 0 {
		return f.Managers
	}
	return []string{culprit[f.Cause]}
}

// ChangedBy joins the culprits for status and events.
func (f Finding) ChangedBy() string { return strings.Join(f.Culprits(), ",") }

// Same reports whether two findings name the same fields and culprits.
func (f Finding) Same(g Finding) bool {
	return f.Cause == g.Cause && slices.Equal(f.Fields, g.Fields) && slices.Equal(f.Managers, g.Managers)
}

// Detect compares the fields we last applied with the managedFields the
// server reports now. It makes no API call and compares no values, so
// defaulting and normalisation never show up as drift: only fields that
// left our manager's entry do. ignore lists field paths (and their
// subtrees) that are never drift.
func Detect(applied *fieldpath.Set, now []metav1.ManagedFieldsEntry, manager string, ignore []string) (Finding, error) {
	if applied == nil || applied.Empty() {
		return Finding{}, nil
	}
	owned, others, err := byManager(now, manager)
	if err != nil {
		return Finding{}, err
	}
	lost := applied.Difference(owned)
	if len(ignore) > 0 {
		kept := &fieldpath.Set{}
		lost.Iterate(func(p fieldpath.Path) {
			if !Ignored(p.String(), ignore) {
				kept.Insert(p)
			}
		})
		lost = kept
	}
	if lost.Empty() {
		return Finding{}, nil
	}
	f := Finding{Cause: CauseChanged, Fields: outermost(lost)}
	for name, s := range others {
		if !s.Intersection(lost).Empty() {
			f.Managers = append(f.Managers, name)
		}
	}
	sort.Strings(f.Managers)
	if len(f.Managers) == 0 {
		f.Cause = CauseRemoved
	}
	f.Foreign = foreignItems(lost, owned, others)
	return f, nil
}

// byManager reads managedFields: the fields manager owns through apply
// on the main resource, and every other manager's (named with
// "/subresource" when not the main resource).
func byManager(entries []metav1.ManagedFieldsEntry, manager string) (*fieldpath.Set, map[string]*fieldpath.Set, error) {
	owned := &fieldpath.Set{}
	others := map[string]*fieldpath.Set{}
	for _, e := range entries {
		if e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, nil, fmt.Errorf("managedFields of %s: %w", e.Manager, err)
		}
		if e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
			owned = owned.Union(s)
			continue
		}
		name := e.Manager
		if e.Subresource != "" {
			name += "/" + e.Subresource
		}
		if prev, ok := others[name]; ok {
			s = prev.Union(s)
		}
		others[name] = s
	}
	return owned, others, nil
}

// outermost returns the outermost paths of lost, as strings, sorted: a
// lost container item is one finding, not one per field inside it.
func outermost(lost *fieldpath.Set) []string {
	var out []string
	seen := map[string]bool{}
	lost.Iterate(func(p fieldpath.Path) {
		for i := 1; i < len(p); i++ {
			if lost.Has(p[:i]) {
				return
			}
		}
		if s := p.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	})
	sort.Strings(out)
	return out
}

// foreignItems returns the items that other managers hold, and we do not,
// in the lists where we lost an item.
func foreignItems(lost, owned *fieldpath.Set, others map[string]*fieldpath.Set) []fieldpath.Path {
	lists := map[string]int{} // list path → its length in elements
	lost.Iterate(func(p fieldpath.Path) {
		if n := len(p); n > 0 && p[n-1].Key != nil {
			lists[p[:n-1].String()] = n - 1
		}
	})
	if len(lists) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var out []fieldpath.Path
	for _, s := range others {
		s.Iterate(func(p fieldpath.Path) {
			n := len(p)
			if n == 0 || p[n-1].Key == nil || owned.Has(p) {
				return
			}
			if l, ok := lists[p[:n-1].String()]; !ok || l != n-1 {
				return
			}
			if k := p.String(); !seen[k] {
				seen[k] = true
				out = append(out, p.Copy())
			}
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Deleted is the finding for an object that no longer exists.
func Deleted() Finding {
	return Finding{Cause: CauseDeleted, Fields: []string{"."}}
}

// PodFailed is the finding for an owned bare Pod that failed.
func PodFailed() Finding {
	return Finding{Cause: CausePodFailed, Fields: []string{".status.phase"}}
}

func Ignored(path string, rules []string) bool {
	for _, r := range rules {
		if path == r || strings.HasPrefix(path, r+".") || strings.HasPrefix(path, r+"[") {
			return true
		}
	}
	return false
}
