package detect

import (
	"fmt"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// removePath deletes the field or list item at p from an unstructured
// object and reports whether something was removed.
func RemovePath(obj map[string]any, p fieldpath.Path) bool {
	var cur any = obj
	for i, pe := range p {
		last := i == len(p)-1
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if last {
				_, found := m[*pe.FieldName]
				delete(m, *pe.FieldName)
				return found
			}
			next := m[*pe.FieldName]
			if l, isList := next.([]any); isList && i+1 < len(p) && p[i+1].Key != nil && i+1 == len(p)-1 {
				// The item itself goes: rebuild the list in its map.
				kept := l[:0:0]
				removed := false
				for _, it := range l {
					if im, ok := it.(map[string]any); ok && itemMatches(im, p[i+1]) {
						removed = true
						continue
					}
					kept = append(kept, it)
				}
				m[*pe.FieldName] = kept
				return removed
			}
			cur = next
		case pe.Key != nil:
			l, ok := cur.([]any)
			if !ok {
				return false
			}
			cur = nil
			for _, it := range l {
				if im, ok := it.(map[string]any); ok && itemMatches(im, pe) {
					cur = im
					break
				}
			}
		default:
			return false
		}
	}
	return false
}

func itemMatches(item map[string]any, pe fieldpath.PathElement) bool {
	for _, f := range *pe.Key {
		if fmt.Sprint(item[f.Name]) != fmt.Sprint(f.Value.Unstructured()) {
			return false
		}
	}
	return true
}
