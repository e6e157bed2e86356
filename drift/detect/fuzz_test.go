package detect

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
)

// Ignore rules (spec.drift.ignore[].fieldPaths) are never parsed: a rule
// is matched against fieldpath.Path.String() as a string (ignored), and
// the agent writes rules for users in ignoreSuggestion. The fuzz targets
// here check Detect with fuzzed rules and managedFields, removePath with
// fuzzed objects and paths, and that a suggested rule reads back as the
// rule it was meant to be.

// readFields reads a FieldsV1 document as Detect reads managedFields.
func readFields(fieldsJSON string) (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	return s, s.FromJSON(metav1.NewFieldsV1(fieldsJSON).GetRawReader())
}

// FuzzDetect detects drift between a fuzzed applied set and fuzzed
// managedFields of ours and of kubectl's, under fuzzed ignore rules (one
// per line).
func FuzzDetect(f *testing.F) {
	withoutReplicas := `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`
	for _, seed := range [][4]string{
		{applied, applied, `{}`, ""},
		{applied, withoutReplicas, `{"f:spec":{"f:replicas":{}}}`, ""},
		{applied, withoutReplicas, `{"f:spec":{"f:replicas":{}}}`, ".spec.replicas"},
		// A renamed container: our item is lost, kubectl's is foreign.
		{applied, `{"f:metadata":{"f:labels":{"f:app":{},"f:tier":{}}},"f:spec":{"f:replicas":{}}}`,
			`{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"api\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`, ""},
		{applied, `{}`, applied, `.spec.template.spec.containers[name="web"]` + "\n.metadata"},
		// Rules are strings: without its leading dot a rule matches
		// nothing, an empty rule matches everything, and the rule for a
		// label also matches the labels whose keys extend it past a dot.
		{applied, `{}`, `{}`, "spec.replicas"},
		{applied, `{}`, `{}`, "\n"},
		{`{"f:metadata":{"f:labels":{"f:app":{},"f:app.kubernetes.io/name":{}}}}`, `{}`,
			`{"f:metadata":{"f:labels":{"f:app.kubernetes.io/name":{}}}}`, ".metadata.labels.app"},
		{`{"f:spec":{"f:args":{"i:0":{},"v:\"x\"":{}},"f:ports":{"k:{\"port\":443,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}}}}`,
			`{"f:spec":{"f:args":{"i:0":{}}}}`, `{"f:spec":{"f:ports":{"k:{\"port\":444,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}}}}`, ""},
		{applied, `{"f:spec":`, `{}`, ""},
		{applied, applied, `not json`, ""},
		{applied, `{"k:{not json}":{}}`, `{}`, ""},
		{applied, `{"x:from-the-future":{}}`, `{}`, ""},
		{`{}`, `{"f:spec":`, `{}`, ""},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, appliedJSON, ours, theirs, rules string) {
		last, err := readFields(appliedJSON)
		if err != nil {
			return // the agent records only fields it read
		}
		var ignore []string
		if rules != "" {
			ignore = strings.Split(rules, "\n")
		}
		now := []metav1.ManagedFieldsEntry{
			entry("driftwatch", "", metav1.ManagedFieldsOperationApply, ours),
			entry("kubectl", "", metav1.ManagedFieldsOperationUpdate, theirs),
		}
		got, err := Detect(last, now, "driftwatch", ignore)
		again, errAgain := Detect(last, now, "driftwatch", ignore)
		if fmt.Sprint(err) != fmt.Sprint(errAgain) || !sameFinding(got, again) {
			t.Fatalf("a second Detect differs: %+v, %v; then %+v, %v", got, err, again, errAgain)
		}
		if last.Empty() {
			if err != nil || got.Drifted() || got.Cause != "" {
				t.Errorf("nothing applied, yet %+v, %v", got, err)
			}
			return
		}
		owned, errOurs := readFields(ours)
		held, errTheirs := readFields(theirs)
		switch {
		case errOurs != nil:
			wantErr(t, err, "managedFields of driftwatch: ")
			return
		case errTheirs != nil:
			wantErr(t, err, "managedFields of kubectl: ")
			return
		case err != nil:
			t.Fatalf("Detect: %v, for managedFields that read", err)
		}
		checkFinding(t, got, last, owned, held, ignore)

		// A rule that matches a path matches every path under it, so
		// rules only ever take fields out of a finding.
		if len(ignore) > 0 {
			all, err := Detect(last, now, "driftwatch", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, field := range got.Fields {
				if !slices.Contains(all.Fields, field) {
					t.Errorf("%s is reported only under the rules %q; without them: %q", field, ignore, all.Fields)
				}
			}
		}
	})
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one naming the entry that does not read (%q)", err, want)
	}
}

func sameFinding(a, b Finding) bool {
	foreign := func(f Finding) (out []string) {
		for _, p := range f.Foreign {
			out = append(out, p.String())
		}
		return out
	}
	return a.Cause == b.Cause && slices.Equal(a.Fields, b.Fields) && slices.Equal(a.Managers, b.Managers) &&
		slices.Equal(foreign(a), foreign(b))
}

// checkFinding checks a finding against what was applied (last), what we
// own (owned) and what kubectl holds (held): every field reported is one
// we applied, lost and do not ignore; every such field is reported, or a
// field above it is; kubectl is named exactly when it holds one of them;
// and the foreign items are kubectl's list items that we do not own.
func checkFinding(t *testing.T, got Finding, last, owned, held *fieldpath.Set, ignore []string) {
	t.Helper()
	lost := map[string]bool{} // by the string that reports it
	var kept []fieldpath.Path // lost and not ignored
	last.Iterate(func(p fieldpath.Path) {
		if owned.Has(p) {
			return
		}
		lost[p.String()] = true
		if !Ignored(p.String(), ignore) {
			kept = append(kept, p.Copy())
		}
	})
	if !slices.IsSorted(got.Fields) || len(slices.Compact(slices.Clone(got.Fields))) != len(got.Fields) {
		t.Errorf("fields %q: want them sorted, each once", got.Fields)
	}
	for _, field := range got.Fields {
		if !lost[field] {
			t.Errorf("%s is reported, but it is no field we applied and lost", field)
		}
		if Ignored(field, ignore) {
			t.Errorf("%s is reported although the rules %q ignore it", field, ignore)
		}
	}
	heldLost := false
	for _, p := range kept {
		covered := false
		for i := len(p); i > 0 && !covered; i-- {
			covered = slices.Contains(got.Fields, p[:i].String())
		}
		if !covered {
			t.Errorf("lost %s is not reported, nor any field above it: %q", p, got.Fields)
		}
		heldLost = heldLost || held.Has(p)
	}
	if !got.Drifted() {
		if got.Cause != "" || len(got.Managers) > 0 || len(got.Foreign) > 0 {
			t.Errorf("no drift, yet %+v", got)
		}
		return
	}
	wantManagers, wantCause := []string(nil), CauseRemoved
	if heldLost {
		wantManagers, wantCause = []string{"kubectl"}, CauseChanged
	}
	if !slices.Equal(got.Managers, wantManagers) || got.Cause != wantCause {
		t.Errorf("managers %q, cause %s; want %q, %s", got.Managers, got.Cause, wantManagers, wantCause)
	}
	for _, p := range got.Foreign {
		if n := len(p); n == 0 || p[n-1].Key == nil || !held.Has(p) || owned.Has(p) {
			t.Errorf("foreign %s: want a keyed list item that kubectl holds and we do not", p)
		}
	}
	if !sort.SliceIsSorted(got.Foreign, func(i, j int) bool { return got.Foreign[i].String() < got.Foreign[j].String() }) {
		t.Errorf("foreign items %v: want them sorted", got.Foreign)
	}
}

// FuzzRemovePath removes each path of a fuzzed field set from a fuzzed
// object: removePath reports a removal exactly when the object changed,
// and a second removal of the same path finds nothing.
func FuzzRemovePath(f *testing.F) {
	deployment := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"web","image":"nginx:1"},{"name":"side","image":"envoy:1"}]}}}}`
	for _, seed := range [][2]string{
		{deployment, `{"f:spec":{"f:replicas":{}},"f:metadata":{"f:labels":{"f:app":{}}}}`},
		{deployment, `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{}}}}}}}`},
		{deployment, `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"side\"}":{".":{}},"k:{\"name\":\"none\"}":{"f:image":{}}}}}}}`},
		{`{"spec":{"ports":[{"port":443,"protocol":"TCP"},{"port":443,"protocol":"TCP","name":"again"},{"port":80}]}}`,
			`{"f:spec":{"f:ports":{"k:{\"port\":443,\"protocol\":\"TCP\"}":{".":{},"f:name":{}}}}}`},
		{`{"a":[1,"x",{"b":2}],"c":"not a map","d":null,"e":[]}`, `{"f:a":{"i:0":{},"v:\"x\"":{}},"f:c":{"f:b":{}},"f:d":{"f:x":{}},"f:e":{"k:{\"k\":1}":{".":{}}}}`},
		{`{}`, `{"k:{\"a\":1}":{},"i:0":{"f:x":{}}}`},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, objJSON, fieldsJSON string) {
		var obj map[string]any
		if err := utiljson.Unmarshal([]byte(objJSON), &obj); err != nil || obj == nil {
			return
		}
		paths, err := readFields(fieldsJSON)
		if err != nil {
			return
		}
		n := 0
		paths.Iterate(func(p fieldpath.Path) {
			if n++; n > 64 {
				return // bounded work per input
			}
			before := runtime.DeepCopyJSON(obj)
			work := runtime.DeepCopyJSON(obj)
			removed := RemovePath(work, p)
			if changed := !reflect.DeepEqual(work, before); changed != removed {
				t.Errorf("RemovePath(%s) = %v, but the object changed: %v\nbefore: %v\nafter:  %v", p, removed, changed, before, work)
			}
			if RemovePath(work, p) {
				t.Errorf("RemovePath(%s) removed something a second time", p)
			}
		})
	})
}

// kindRE is what a kind looks like.
var kindRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// FuzzIgnoreSuggestion writes the rule that the agent suggests when a
// field is taken again and again, and reads it back as a Bundle's
// spec.drift.ignore entry: pasted into a Bundle, it must be that rule,
// no wider and no other.
func FuzzIgnoreSuggestion(f *testing.F) {
	for _, seed := range [][4]string{
		{"apps", "Deployment", "web", ".spec.replicas"},
		{"", "ConfigMap", "settings", ".data.mode"},
		{"", "Service", "api", `.spec.ports[port=443,protocol="TCP"]`},
		{"example.com", "Widget", "w-1.v2", ".metadata.annotations.note"},
		{"", "ConfigMap", "c", ".data.a\"b\\c\td\n"},
		{"", "Secret", "s", ".data.é✓"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, group, kind, name, field string) {
		// Only what can reach a suggestion: the API server holds names
		// and groups to DNS subdomains, kinds are identifiers, and field
		// paths come from JSON, so they are UTF-8.
		if (group != "" && len(validation.IsDNS1123Subdomain(group)) > 0) || !kindRE.MatchString(kind) ||
			len(validation.IsDNS1123Subdomain(name)) > 0 || !utf8.ValidString(field) {
			return
		}
		s := IgnoreSuggestion(manifests.ObjectRef{Group: group, Kind: kind, Namespace: "ns", Name: name}, field)
		var rule manifests.IgnoreRule
		if err := yaml.Unmarshal([]byte(s), &rule); err != nil {
			t.Fatalf("the suggestion %s is not YAML: %v", s, err)
		}
		want := manifests.IgnoreRule{Group: group, Kind: kind, Name: name, FieldPaths: []string{field}}
		if !reflect.DeepEqual(rule, want) {
			t.Errorf("the suggestion %s reads back as %+v, want %+v", s, rule, want)
		}
	})
}
