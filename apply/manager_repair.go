package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// ReplaceListItems removes list items that another manager added, named
// by field paths ending in a key (".spec.ports[port=444,protocol=\"TCP\"]"),
// and puts back the desired items of the same lists, in one strategic merge
// patch. Server-side apply never removes fields another manager owns: this
// is the one write that does, used only to undo a changed list key (a
// Service port, a renamed container) before re-applying ours. Our items go
// in the same write so that a list that must not be empty (Service ports)
// never is. Built-in kinds get a strategic merge patch; custom resources,
// which do not accept one, a JSON patch whose test operations make it fail
// rather than remove the wrong item if the list moved since it was read.
func (a *Applier) ReplaceListItems(ctx context.Context, d Desired, foreign []fieldpath.Path) error {
	if !SupportsStrategicMerge(schema.FromAPIVersionAndKind(d.APIVersion, d.Ref.Kind)) {
		return a.replaceListItemsJSONPatch(ctx, d, foreign)
	}
	patch := map[string]any{}
	lists := map[string]bool{}
	for _, p := range foreign {
		if len(p) == 0 || p[len(p)-1].Key == nil {
			return fmt.Errorf("%s: %s is not a list item", d.Ref, p)
		}
		del := map[string]any{"$patch": "delete"}
		for _, f := range *p[len(p)-1].Key {
			del[f.Name] = f.Value.Unstructured()
		}
		list := p[:len(p)-1]
		items := []any{del}
		if !lists[list.String()] {
			lists[list.String()] = true
			obj, err := d.Object()
			if err != nil {
				return err
			}
			items = append(items, listAt(obj.Object, list)...)
		}
		if err := addToList(patch, list, items); err != nil {
			return fmt.Errorf("%s: %w", d.Ref, err)
		}
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.StrategicMergePatchType, body,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager})
	if err != nil {
		return fmt.Errorf("%s: replacing list items %v: %w", d.Ref, foreign, err)
	}
	return nil
}

// replaceListItemsJSONPatch is ReplaceListItems for custom resources.
func (a *Applier) replaceListItemsJSONPatch(ctx context.Context, d Desired, foreign []fieldpath.Path) error {
	live, err := a.Get(ctx, d)
	if err != nil || live == nil {
		return err
	}
	desired, err := d.Object()
	if err != nil {
		return err
	}
	lists, err := foreignLists(d, live.Object, foreign)
	if err != nil {
		return err
	}
	ops := listPatch(lists, desired.Object)
	if len(ops) == 0 {
		return nil
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = a.client.Resource(d.GVR).Namespace(d.Ref.Namespace).Patch(ctx, d.Ref.Name, types.JSONPatchType, body,
		metav1.PatchOptions{FieldManager: a.opts.FieldManager})
	if err != nil {
		return fmt.Errorf("%s: replacing list items %v: %w", d.Ref, foreign, err)
	}
	return nil
}

// listOps are the foreign items to remove from one list of the live object.
type listOps struct {
	pointer string // JSON pointer of the list
	items   []any  // the live list
	remove  []int  // indexes of the foreign items
	keys    []string
	list    fieldpath.Path
}

// foreignLists finds, per list, the live items that foreign names, in the
// order the lists first appear.
func foreignLists(d Desired, live map[string]any, foreign []fieldpath.Path) ([]*listOps, error) {
	byPath := map[string]*listOps{}
	var lists []*listOps
	for _, p := range foreign {
		if len(p) == 0 || p[len(p)-1].Key == nil {
			return nil, fmt.Errorf("%s: %s is not a list item", d.Ref, p)
		}
		list := p[:len(p)-1]
		l, ok := byPath[list.String()]
		if !ok {
			pointer, items, found := pointerTo(live, list)
			if !found {
				continue // the list is gone: nothing of theirs to remove
			}
			l = &listOps{pointer: pointer, items: items, list: list}
			for _, f := range *p[len(p)-1].Key {
				l.keys = append(l.keys, f.Name)
			}
			byPath[list.String()] = l
			lists = append(lists, l)
		}
		for i, it := range l.items {
			if m, ok := it.(map[string]any); ok && keyMatches(m, p[len(p)-1]) {
				l.remove = append(l.remove, i)
			}
		}
	}
	return lists, nil
}

// listPatch is the JSON patch that removes the foreign items — each after
// a test of its keys, from the end of its list — and adds back ours that
// the live lists lack.
func listPatch(lists []*listOps, desired map[string]any) []map[string]any {
	var ops []map[string]any
	for _, l := range lists {
		sort.Sort(sort.Reverse(sort.IntSlice(l.remove)))
		for _, i := range l.remove {
			item := l.items[i].(map[string]any)
			for _, key := range l.keys {
				ops = append(ops, map[string]any{"op": "test", "path": fmt.Sprintf("%s/%d/%s", l.pointer, i, escapePointer(key)), "value": item[key]})
			}
			ops = append(ops, map[string]any{"op": "remove", "path": fmt.Sprintf("%s/%d", l.pointer, i)})
		}
	}
	for _, l := range lists {
		for _, ours := range listAt(desired, l.list) {
			m, ok := ours.(map[string]any)
			if ok && !containsKey(l.items, m, l.keys) {
				ops = append(ops, map[string]any{"op": "add", "path": l.pointer + "/-", "value": m})
			}
		}
	}
	return ops
}

// pointerTo returns the JSON pointer of the list at path in obj, and the
// list, resolving key elements to indexes.
func pointerTo(obj map[string]any, path fieldpath.Path) (string, []any, bool) {
	var cur any = obj
	pointer := ""
	for _, pe := range path {
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return "", nil, false
			}
			cur = m[*pe.FieldName]
			pointer += "/" + escapePointer(*pe.FieldName)
		case pe.Key != nil:
			list, _ := cur.([]any)
			found := false
			for i, it := range list {
				if m, ok := it.(map[string]any); ok && keyMatches(m, pe) {
					cur, pointer, found = m, fmt.Sprintf("%s/%d", pointer, i), true
					break
				}
			}
			if !found {
				return "", nil, false
			}
		default:
			return "", nil, false
		}
	}
	list, ok := cur.([]any)
	return pointer, list, ok
}

func containsKey(list []any, item map[string]any, keys []string) bool {
	for _, it := range list {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		same := true
		for _, k := range keys {
			if fmt.Sprint(m[k]) != fmt.Sprint(item[k]) {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func escapePointer(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

// SupportsStrategicMerge reports whether the API server accepts strategic
// merge patches for gvk: built-in kinds only.
func SupportsStrategicMerge(gvk schema.GroupVersionKind) bool { return scheme.Scheme.Recognizes(gvk) }

// addToList merges into patch the strategic-merge structure that reaches
// the list at path (field names as nested maps, each key element as a
// one-item list holding the key's fields) and appends items to that list.
func addToList(patch map[string]any, path fieldpath.Path, items []any) error {
	cur := patch
	for i := 0; i < len(path); i++ {
		pe := path[i]
		if pe.FieldName == nil {
			return fmt.Errorf("cannot express %s as a strategic merge patch", path)
		}
		if i == len(path)-1 {
			list, _ := cur[*pe.FieldName].([]any)
			cur[*pe.FieldName] = append(list, items...)
			return nil
		}
		if next := path[i+1]; next.Key != nil {
			item := map[string]any{}
			for _, f := range *next.Key {
				item[f.Name] = f.Value.Unstructured()
			}
			list, _ := cur[*pe.FieldName].([]any)
			cur[*pe.FieldName] = append(list, item)
			cur = item
			i++ // the key element is consumed
			continue
		}
		m, ok := cur[*pe.FieldName].(map[string]any)
		if !ok {
			m = map[string]any{}
			cur[*pe.FieldName] = m
		}
		cur = m
	}
	return fmt.Errorf("empty path")
}

// listAt returns the list at path in an unstructured object, or nil.
func listAt(obj map[string]any, path fieldpath.Path) []any {
	var cur any = obj
	for _, pe := range path {
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[*pe.FieldName]
		case pe.Key != nil:
			list, _ := cur.([]any)
			cur = nil
			for _, it := range list {
				m, ok := it.(map[string]any)
				if ok && keyMatches(m, pe) {
					cur = m
					break
				}
			}
		default:
			return nil
		}
	}
	list, _ := cur.([]any)
	return list
}

func keyMatches(item map[string]any, pe fieldpath.PathElement) bool {
	for _, f := range *pe.Key {
		if fmt.Sprint(item[f.Name]) != fmt.Sprint(f.Value.Unstructured()) {
			return false
		}
	}
	return true
}
