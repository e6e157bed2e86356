// Package depends resolves spec.dependsOn among the Bundles of one
// namespace — by name and by label selector, with cycles found — and says
// what a Bundle still waits for. It is pure: the Bundles come from the
// caller's cache.
package depends

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/driftwatch/driftwatch/manifests"
)

// WaitingFor says what the Bundle name waits for before it is applied: its
// dependencies (spec.dependsOn, Bundles of its namespace) that are not
// Ready at their current generation, or a dependency cycle through it.
// "" means nothing. bundles are the Bundles of its namespace by name.
func WaitingFor(name string, dependsOn []manifests.Dependency, bundles map[string]*unstructured.Unstructured) string {
	deps, err := dependencies(dependsOn, bundles)
	if err != nil {
		return fmt.Sprintf("spec.dependsOn: %v", err)
	}
	if cycle := findCycle(name, bundles); cycle != nil {
		return "dependency cycle: " + strings.Join(cycle, " → ") + "; none of them is applied until it is broken"
	}
	var waiting []string
	for _, d := range deps {
		if d == name {
			continue
		}
		u, ok := bundles[d]
		if !ok {
			waiting = append(waiting, d+" (not found)")
			continue
		}
		if !Ready(u) {
			waiting = append(waiting, d)
		}
	}
	if len(waiting) == 0 {
		return ""
	}
	return "waiting for bundles to be Ready: " + strings.Join(waiting, ", ")
}

// dependencies resolves dependsOn to Bundle names, sorted: a name is kept
// even if no such Bundle exists (it is waited for); a selector matches the
// Bundles' labels.
func dependencies(deps []manifests.Dependency, bundles map[string]*unstructured.Unstructured) ([]string, error) {
	set := map[string]bool{}
	for i, d := range deps {
		if d.Name != "" {
			set[d.Name] = true
		}
		if d.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Selector)
		if err != nil {
			return nil, fmt.Errorf("[%d].selector: %w", i, err)
		}
		for name, u := range bundles {
			if sel.Matches(labels.Set(u.GetLabels())) {
				set[name] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// findCycle returns a cycle of dependencies through start, if any.
func findCycle(start string, bundles map[string]*unstructured.Unstructured) []string {
	edges := func(name string) []string {
		u, ok := bundles[name]
		if !ok {
			return nil
		}
		var spec struct {
			DependsOn []manifests.Dependency `json:"dependsOn"`
		}
		if m, ok := u.Object["spec"].(map[string]any); ok {
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &spec) // a bad spec has no edges
		}
		deps, _ := dependencies(spec.DependsOn, bundles)
		return deps
	}
	path := []string{start}
	onPath := map[string]bool{start: true}
	done := map[string]bool{}
	var visit func(string) []string
	visit = func(n string) []string {
		for _, d := range edges(n) {
			if d == start && n == start {
				continue // a selector that matches the Bundle itself (waitingFor skips it)
			}
			if d == start {
				return append(append([]string(nil), path...), start)
			}
			if onPath[d] || done[d] {
				continue
			}
			path, onPath[d] = append(path, d), true
			if c := visit(d); c != nil {
				return c
			}
			path, onPath[d] = path[:len(path)-1], false
			done[d] = true
		}
		return nil
	}
	return visit(start)
}

// Ready reports a Bundle whose status says Ready at its generation.
// It reads the two fields only: it runs on every Bundle update event.
func Ready(u *unstructured.Unstructured) bool {
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed != u.GetGeneration() {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == manifests.ConditionReady {
			return m["status"] == string(metav1.ConditionTrue)
		}
	}
	return false
}
