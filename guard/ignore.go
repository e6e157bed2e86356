package guard

import (
	"fmt"
	"sort"
	"strings"

	"github.com/driftwatch/driftwatch/manifests"
)

// unchanged is the CEL expression that holds when our managedFields entry
// is the same before and after the request (variables.oldF and newF),
// except for the fields that ignore rules exclude on the object at hand:
// those may move to another manager.
func unchanged(rules []manifests.IgnoreRule) string {
	root := &node{children: map[string]*node{}}
	for _, r := range rules {
		match := matches(r)
		for _, p := range r.FieldPaths {
			keys, err := fieldsKeys(p)
			if err != nil {
				continue // not a path of ours to exclude: guarded as owned
			}
			n := root
			for _, k := range keys {
				c := n.children[k]
				if c == nil {
					c = &node{children: map[string]*node{}}
					n.children[k] = c
				}
				n = c
			}
			n.excluded = append(n.excluded, match)
		}
	}
	return equal("variables.oldF", "variables.newF", root, 0)
}

// node is a step of the ignored paths, as managedFields keys: excluded
// holds the conditions under which the subtree from here is not compared.
type node struct {
	children map[string]*node
	excluded []string
}

// equal compares the fieldsV1 maps o and n, but for the excluded subtrees.
func equal(o, n string, at *node, depth int) string {
	if len(at.children) == 0 {
		return o + " == " + n
	}
	keys := make([]string, 0, len(at.children))
	for k := range at.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = quote(k)
	}
	k := fmt.Sprintf("k%d", depth) // comprehension variables may not shadow
	set := "[" + strings.Join(quoted, ", ") + "]"
	parts := []string{
		fmt.Sprintf("%[1]s.all(%[3]s, %[3]s in %[4]s || (%[3]s in %[2]s && %[2]s[%[3]s] == %[1]s[%[3]s]))", o, n, k, set),
		fmt.Sprintf("%[2]s.all(%[3]s, %[3]s in %[4]s || %[3]s in %[1]s)", o, n, k, set),
	}
	for i, key := range keys {
		c := at.children[key]
		get := func(m string) string { return fmt.Sprintf("(%s in %s ? %s[%s] : {})", quoted[i], m, m, quoted[i]) }
		sub := equal(get(o), get(n), c, depth+1)
		if len(c.excluded) > 0 {
			sub = "(" + strings.Join(c.excluded, " || ") + ") || " + sub
		}
		parts = append(parts, "("+sub+")")
	}
	return "(" + strings.Join(parts, " && ") + ")"
}

// matches is the CEL condition under which an ignore rule applies to the
// request's object.
func matches(r manifests.IgnoreRule) string {
	conds := []string{"true"}
	if r.Group != "" {
		conds = append(conds, fmt.Sprintf("object.apiVersion.startsWith(%s)", quote(r.Group+"/")))
	} else if r.Kind != "" {
		conds = append(conds, "!object.apiVersion.contains('/')") // the core group
	}
	if r.Kind != "" {
		conds = append(conds, "object.kind == "+quote(r.Kind))
	}
	if r.Namespace != "" {
		conds = append(conds, "has(object.metadata.namespace) && object.metadata.namespace == "+quote(r.Namespace))
	}
	if r.Name != "" {
		conds = append(conds, "object.metadata.name == "+quote(r.Name))
	}
	return "(" + strings.Join(conds, " && ") + ")"
}

// fieldsKeys turns an ignore rule's field path (".spec.replicas",
// `.spec.template.spec.containers[name="web"].image`,
// ".metadata.annotations.example.com/note") into the keys of a
// managedFields fieldsV1 map ("f:spec", `k:{"name":"web"}`, …). Under
// metadata.labels and metadata.annotations the rest of the path is one
// key: label and annotation keys hold dots.
func fieldsKeys(p string) ([]string, error) {
	if !strings.HasPrefix(p, ".") {
		return nil, fmt.Errorf("%q does not start with '.'", p)
	}
	var keys []string
	rest := p
	for rest != "" {
		switch rest[0] {
		case '.':
			if len(keys) == 2 && keys[0] == "f:metadata" && (keys[1] == "f:labels" || keys[1] == "f:annotations") {
				keys = append(keys, "f:"+rest[1:])
				return keys, nil
			}
			end := strings.IndexAny(rest[1:], ".[")
			if end < 0 {
				end = len(rest) - 1
			}
			name := rest[1 : end+1]
			if name == "" {
				return nil, fmt.Errorf("%q has an empty field name", p)
			}
			keys = append(keys, "f:"+name)
			rest = rest[end+1:]
		case '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("%q has an unclosed '['", p)
			}
			k, err := itemKey(rest[1:end])
			if err != nil {
				return nil, fmt.Errorf("%q: %w", p, err)
			}
			keys = append(keys, k)
			rest = rest[end+1:]
		default:
			return nil, fmt.Errorf("%q: unexpected %q", p, rest[:1])
		}
	}
	return keys, nil
}

// itemKey turns the inside of a list item's brackets — `name="web"`,
// `port=443,protocol="TCP"`, `="value"`, `3` — into its fieldsV1 key.
func itemKey(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "="):
		return "v:" + s[1:], nil
	case !strings.Contains(s, "="):
		return "i:" + s, nil
	}
	fields := map[string]string{}
	var names []string
	for _, kv := range splitTop(s) {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return "", fmt.Errorf("key %q is not name=value", kv)
		}
		fields[name] = value
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = quote(n) + ":" + fields[n]
	}
	return "k:{" + strings.Join(parts, ",") + "}", nil
}

// splitTop splits on commas outside quoted strings.
func splitTop(s string) []string {
	var out []string
	inQuote, escaped, start := false, false, 0
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			inQuote = !inQuote
		case r == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
