package manifests

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
)

// hostileInput is a Bundle file that a careless or hostile author could
// write, and what Decode makes of it when the file is named hostile.yaml.
type hostileInput struct {
	name     string
	encoding Encoding
	content  string
	wantObjs []string // sources
	wantErrs []string // substrings, in order
}

// hostileInputs are small enough to seed FuzzDecode with; TestHostileDecodeInput
// adds a large one.
func hostileInputs() []hostileInput {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
	gzipped, _ := base64.StdEncoding.DecodeString(gz(cm))
	return []hostileInput{
		{name: "random bytes", content: "\x00\x01\x02\x03 \xff\xfe\xfd not yaml",
			wantErrs: []string{"hostile.yaml#1: invalid YAML"}},
		{name: "invalid base64", encoding: EncodingBase64, content: "%%% not base64 %%%",
			wantErrs: []string{"hostile.yaml: invalid base64"}},
		{name: "base64 of bytes that are not gzip", encoding: EncodingBase64Gzip, content: base64.StdEncoding.EncodeToString([]byte(cm)),
			wantErrs: []string{"hostile.yaml: invalid gzip"}},
		{name: "truncated gzip", encoding: EncodingBase64Gzip, content: base64.StdEncoding.EncodeToString(gzipped[:len(gzipped)/2]),
			wantErrs: []string{"hostile.yaml: invalid gzip"}},
		// A MiB of one letter is about a KiB gzipped; it is under
		// MaxDecodedBytes, and a scalar is no object.
		{name: "a MiB of one letter, gzipped", encoding: EncodingBase64Gzip, content: gz(strings.Repeat("a", 1<<20)),
			wantErrs: []string{"hostile.yaml#1: invalid YAML"}},
		{name: "ten thousand nested flow sequences", content: strings.Repeat("[", 10000),
			wantErrs: []string{"hostile.yaml#1: invalid YAML"}},
		// The YAML decoder stops a document made mostly of alias
		// expansions after some thousand nodes, not 9^9 strings.
		{name: "billion laughs", content: aliasBomb(),
			wantErrs: []string{"document contains excessive aliasing"}},
		{name: "missing kind", content: "apiVersion: v1\nmetadata: {name: a}\n",
			wantErrs: []string{"hostile.yaml#1: apiVersion and kind are required"}},
		{name: "missing apiVersion", content: "kind: ConfigMap\nmetadata: {name: a}\n",
			wantErrs: []string{"hostile.yaml#1: apiVersion and kind are required"}},
		{name: "a name that is not a string", content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 123}\n",
			wantErrs: []string{"hostile.yaml#1: ConfigMap: metadata.name is required"}},
		// The YAML reader cannot resynchronise after a broken separator:
		// the document before it is lost with the rest of the file, and
		// the error is the first document's.
		{name: "text after a document separator", content: cm + "--- junk\n" + strings.Replace(cm, "name: a", "name: b", 1),
			wantErrs: []string{"hostile.yaml#1: invalid Yaml document separator: junk"}},
		{name: "a List of scalars", content: "apiVersion: v1\nkind: List\nitems: [1, 2]\n",
			wantErrs: []string{"hostile.yaml#1: items member is not an object"}},
		{name: "a List item without a name", content: "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap}\n",
			wantObjs: []string{"hostile.yaml#1[0]"}, wantErrs: []string{"hostile.yaml#1[1]: ConfigMap: metadata.name is required"}},
		{name: "a scalar document", content: "just some text\n",
			wantErrs: []string{"hostile.yaml#1: invalid YAML"}},
		{name: "a null document", content: "~\n",
			wantErrs: []string{ErrEmptyBundle.Error()}},
		// Valid here: the group is refused by the cluster's REST mapping,
		// and the name by the API server, each naming the object.
		{name: "unknown group", content: "apiVersion: nothing.example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
			wantObjs: []string{"hostile.yaml#1"}},
		{name: "a name the API server refuses", content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"UPPER_case!\"}\n",
			wantObjs: []string{"hostile.yaml#1"}},
	}
}

// aliasBomb is the "billion laughs": nine levels of nine aliases of the
// level below, 9^9 strings once expanded, in 400 bytes.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString(`a: &a ["x","x","x","x","x","x","x","x","x"]` + "\n")
	for c := 'b'; c <= 'i'; c++ {
		fmt.Fprintf(&b, "%c: &%c [%s]\n", c, c, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*%c,", c-1), 9), ","))
	}
	return b.String()
}

// gzipBomb is members gzip members of a MiB each. gzip.Reader reads
// concatenated members as one stream, so the MiB is compressed once and a
// GiB takes a MiB and a half of base64.
func gzipBomb(members int) string {
	member, _ := base64.StdEncoding.DecodeString(gz(strings.Repeat("a", 1<<20)))
	return base64.StdEncoding.EncodeToString(bytes.Repeat(member, members))
}

func TestHostileDecodeInput(t *testing.T) {
	tests := append(hostileInputs(), hostileInput{
		// Decoding stops at MaxDecodedBytes instead of inflating the GiB.
		name: "a GiB in gzip members", encoding: EncodingBase64Gzip, content: gzipBomb(1024),
		wantErrs: []string{"hostile.yaml: the bundle's resources exceed"}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, errs := decodeWithin(t, []Resource{{Name: "hostile.yaml", Encoding: tt.encoding, Content: tt.content}})
			wantDecoded(t, objs, errs, tt.wantObjs, tt.wantErrs)
		})
	}
}

// decodeWithin decodes with a generous deadline, as a safety net: a
// decoder that hangs on one input fails that case, by name, rather than
// the whole run at its timeout.
func decodeWithin(t *testing.T, resources []Resource) ([]Object, []error) {
	t.Helper()
	type result struct {
		objs []Object
		errs []error
	}
	done := make(chan result, 1)
	go func() {
		objs, errs := Decode(resources)
		done <- result{objs, errs}
	}()
	select {
	case r := <-done:
		return r.objs, r.errs
	case <-time.After(time.Minute):
		t.Fatal("Decode did not return within a minute")
		return nil, nil
	}
}

// fuzzName is the resource's name in FuzzDecode: a path, as Bundle files
// have, so that every error can be seen to name it.
const fuzzName = "app/fuzz.yaml"

// FuzzDecode decodes one resource of any content and encoding. With
// encode set the harness encodes the content itself, so that mutations
// reach the YAML under base64 and gzip instead of only breaking the
// encoding; without it the content is taken as it is.
func FuzzDecode(f *testing.F) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
	for _, seed := range []struct {
		encoding Encoding
		content  string
		encode   bool
	}{
		{EncodingNone, cm, false},
		{EncodingNone, "# c\n---\n" + cm + "---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n- {apiVersion: v1, kind: Secret, metadata: {name: c}}\n--- # next\napiVersion: v1\nkind: Secret\nmetadata: {name: e}\ndata: {k: dg==}", false},
		{EncodingNone, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}`, false},
		{EncodingNone, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lit}\ndata:\n  k: |\n    line one\n    line two\n", false},
		{EncodingBase64, base64.StdEncoding.EncodeToString([]byte(cm)), false},
		{EncodingBase64, cm, true},
		{EncodingBase64Gzip, cm, true},
		{"rot13", cm, false},
	} {
		f.Add(string(seed.encoding), []byte(seed.content), seed.encode)
	}
	for _, h := range hostileInputs() {
		f.Add(string(h.encoding), []byte(h.content), false)
	}
	f.Fuzz(func(t *testing.T, encoding string, content []byte, encode bool) {
		r := Resource{Name: fuzzName, Encoding: Encoding(encoding), Content: string(content)}
		if encode {
			switch r.Encoding {
			case EncodingBase64:
				r.Content = base64.StdEncoding.EncodeToString(content)
			case EncodingBase64Gzip:
				r.Content = gz(string(content))
			}
		}
		resources := []Resource{r}
		objs, errs := Decode(resources)
		checkDecoded(t, resources, objs, errs)

		// Decoding is a function of the Bundle alone: were it not, its
		// hash and its corrections would change with no change to it.
		again, againErrs := Decode(resources)
		if !reflect.DeepEqual(objs, again) {
			t.Errorf("a second decode gives other objects")
		}
		if fmt.Sprint(errs) != fmt.Sprint(againErrs) {
			t.Errorf("a second decode gives other errors:\n%v\n%v", errs, againErrs)
		}
	})
}

// checkDecoded checks what Decode made of one resource: an error for an
// empty result, errors that name the file, complete objects, and
// locators by which DecodeAt finds each object again.
func checkDecoded(t *testing.T, resources []Resource, objs []Object, errs []error) {
	t.Helper()
	if len(objs) == 0 && len(errs) == 0 {
		t.Fatal("no objects and no errors: a bundle that declares nothing must be an error")
	}
	for _, err := range errs {
		if err == nil || err.Error() == "" {
			t.Fatalf("an empty error among %v", errs)
		}
		if errors.Is(err, ErrEmptyBundle) {
			if len(objs) > 0 || len(errs) > 1 {
				t.Errorf("ErrEmptyBundle beside %d objects and errors %v", len(objs), errs)
			}
			continue
		}
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("error %q is no DecodeError: it names no file", err)
			continue
		}
		if !strings.HasPrefix(de.Source, fuzzName) || de.Err == nil || de.Err.Error() == "" {
			t.Errorf("error %q: source %q, want one that names %s and says why", err, de.Source, fuzzName)
		}
	}
	raw, rawErr := ResourceBytes(resources[0])
	for _, o := range objs {
		if o.Object == nil {
			t.Fatalf("%s: no object", o.Source)
		}
		u, loc := o.Object, o.Locator
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			t.Errorf("%s: apiVersion %q, kind %q, name %q: all three are required", o.Source, u.GetAPIVersion(), u.GetKind(), u.GetName())
		}
		want := fmt.Sprintf("%s#%d", fuzzName, loc.Doc)
		if loc.Item >= 0 {
			want += fmt.Sprintf("[%d]", loc.Item)
		}
		if o.Source != want || loc.Resource != 0 || loc.Doc < 1 || loc.Item < -1 {
			t.Errorf("source %q with locator %+v, want source %q", o.Source, loc, want)
		}
		if rawErr != nil {
			t.Fatalf("%s decoded from a resource whose content does not decode: %v", o.Source, rawErr)
		}
		if len(raw) > MaxDecodedBytes {
			t.Errorf("%s decoded from %d bytes, more than MaxDecodedBytes", o.Source, len(raw))
		}
		if loc.Offset < 0 || loc.Len < 0 || int(loc.Offset)+int(loc.Len) > len(raw) {
			t.Errorf("%s: span %+v outside the %d bytes of its resource", o.Source, loc, len(raw))
		}
		// A correction applies the object DecodeAt finds, with the
		// document's span and without it (the scan): it must be the one
		// that the sync applied.
		scan := loc
		scan.Offset, scan.Len = 0, 0
		for _, at := range []Locator{loc, scan} {
			got, err := DecodeAt(resources, at)
			if err != nil {
				t.Errorf("%s: DecodeAt(%+v): %v", o.Source, at, err)
				continue
			}
			if !equality.Semantic.DeepEqual(got.Object, u.Object) {
				t.Errorf("%s: DecodeAt(%+v) = %v, Decode gave %v", o.Source, at, got.Object, u.Object)
			}
		}
	}
}
