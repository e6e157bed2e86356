package drift

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// ManagerDeleted and ManagerRemoved name the culprit when no field manager
// holds the lost fields: the object was deleted, or the fields were removed.
const (
	ManagerDeleted = "deleted"
	ManagerRemoved = "removed"
)

// Finding is the drift of one object.
type Finding struct {
	// Fields that we applied and no longer own, as field paths
	// (".spec.replicas"), sorted; only the outermost lost path of a subtree.
	Fields []string
	// Managers that now hold them (with "/subresource" when not the main
	// resource), or ManagerRemoved / ManagerDeleted.
	Managers []string
	// lost is the full set, for fight tracking.
	lost *fieldpath.Set
}

// Drifted reports whether anything drifted.
func (f Finding) Drifted() bool { return len(f.Fields) > 0 }

// ChangedBy joins the managers for status and events.
func (f Finding) ChangedBy() string { return strings.Join(f.Managers, ",") }

// Detect compares the fields we last applied with the managedFields the
// server reports now. It makes no API call and compares no values, so
// defaulting and normalisation never show up as drift: only fields that
// left our manager's entry do. ignore lists field paths (and their
// subtrees) that are never drift.
func Detect(applied *fieldpath.Set, now []metav1.ManagedFieldsEntry, manager string, ignore []string) (Finding, error) {
	if applied == nil || applied.Empty() {
		return Finding{}, nil
	}
	owned := &fieldpath.Set{}
	others := map[string]*fieldpath.Set{}
	for _, e := range now {
		if e.FieldsV1 == nil {
			continue
		}
		s := &fieldpath.Set{}
		if err := s.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return Finding{}, fmt.Errorf("managedFields of %s: %w", e.Manager, err)
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
	lost := applied.Difference(owned)
	if len(ignore) > 0 {
		kept := &fieldpath.Set{}
		lost.Iterate(func(p fieldpath.Path) {
			if !ignored(p.String(), ignore) {
				kept.Insert(p)
			}
		})
		lost = kept
	}
	if lost.Empty() {
		return Finding{}, nil
	}
	f := Finding{lost: lost}
	seen := map[string]bool{}
	lost.Iterate(func(p fieldpath.Path) {
		// Report the outermost lost path: a lost container item is one
		// finding, not one per field inside it.
		for i := 1; i < len(p); i++ {
			if lost.Has(p[:i]) {
				return
			}
		}
		if s := p.String(); !seen[s] {
			seen[s] = true
			f.Fields = append(f.Fields, s)
		}
	})
	sort.Strings(f.Fields)
	for name, s := range others {
		if !s.Intersection(lost).Empty() {
			f.Managers = append(f.Managers, name)
		}
	}
	sort.Strings(f.Managers)
	if len(f.Managers) == 0 {
		f.Managers = []string{ManagerRemoved}
	}
	return f, nil
}

// Deleted is the finding for an object that no longer exists.
func Deleted() Finding {
	return Finding{Fields: []string{"."}, Managers: []string{ManagerDeleted}}
}

func ignored(path string, rules []string) bool {
	for _, r := range rules {
		if path == r || strings.HasPrefix(path, r+".") || strings.HasPrefix(path, r+"[") {
			return true
		}
	}
	return false
}
