package manifests

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// MaxDecodedBytes is the default bound on the decoded size of one Bundle's
// resources (Limits.Bytes), so that a hostile or mistaken Bundle cannot
// exhaust the agent's memory; HardMaxBytes bounds any one resource read,
// whatever the limits say.
const (
	MaxDecodedBytes = 8 << 20
	HardMaxBytes    = 64 << 20
)

// Limits bound what one Bundle may declare; a Bundle beyond them is not
// rendered, and its status says which limit and by how much.
type Limits struct {
	// Bytes bounds the total decoded size of the Bundle's resources (after
	// base64 and gzip), at most HardMaxBytes.
	Bytes int64
	// Objects bounds the documents it renders to (objects, and documents
	// that could not be decoded).
	Objects int
}

// DefaultLimits are the limits of an agent that sets none.
var DefaultLimits = Limits{Bytes: MaxDecodedBytes, Objects: 10000}

// OrDefault fills in the limits that are not set.
func (l Limits) OrDefault() Limits {
	if l.Bytes <= 0 {
		l.Bytes = DefaultLimits.Bytes
	}
	if l.Bytes > HardMaxBytes {
		l.Bytes = HardMaxBytes
	}
	if l.Objects <= 0 {
		l.Objects = DefaultLimits.Objects
	}
	return l
}

// checkSize refuses resources whose decoded size exceeds max, reading
// compressed ones through (up to max) without keeping them. Resources
// that cannot be decoded count as their encoded size: the renderer
// reports them.
func checkSize(resources []Resource, max int64) error {
	var total int64
	for _, r := range resources {
		switch r.Encoding {
		case EncodingBase64Gzip:
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Content))
			if err != nil {
				total += int64(len(r.Content))
				break
			}
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				total += int64(len(b))
				break
			}
			n, _ := io.Copy(io.Discard, io.LimitReader(zr, max-total+1))
			total += n
		case EncodingBase64:
			total += int64(base64.StdEncoding.DecodedLen(len(strings.TrimSpace(r.Content))))
		default:
			total += int64(len(r.Content))
		}
		if total > max {
			return fmt.Errorf("its resources exceed %d bytes decoded (at %s); the agent's limit is --max-bundle-bytes", max, r.Name)
		}
	}
	return nil
}

// Object is one desired object and where it came from.
type Object struct {
	Object *unstructured.Unstructured
	// Source is "file.yaml#3": the resource's name and the document's
	// 1-based index.
	Source string
	// Locator finds the object again with DecodeAt.
	Locator Locator
}

// Locator is where an object is declared: the index of its resource, the
// 1-based number of its document, and its index in a List (-1 if none).
// Offset and Len, when Len > 0, are the document's bytes in the decoded
// resource, so that DecodeAt reads that document alone.
type Locator struct {
	Resource, Doc, Item int
	Offset, Len         int32
}

// DecodeAt decodes the one object at loc, as Decode would, without
// decoding the other documents: a correction needs one object of a
// Bundle, not all of them. With the document's span it slices the
// resource's content (no copy of the file, no split); without it, or when
// the span no longer fits, it reads the documents up to loc.Doc.
func DecodeAt(resources []Resource, loc Locator) (*unstructured.Unstructured, error) {
	if loc.Resource < 0 || loc.Resource >= len(resources) {
		return nil, fmt.Errorf("no resource %d", loc.Resource)
	}
	r := resources[loc.Resource]
	start, end := int(loc.Offset), int(loc.Offset)+int(loc.Len)
	if loc.Len > 0 && r.Encoding == EncodingNone && start >= 0 && end <= len(r.Content) {
		return decodeAt(r.Name, loc, []byte(r.Content[start:end]))
	}
	raw, err := decodeContent(r, HardMaxBytes)
	if err != nil {
		return nil, &DecodeError{Source: r.Name, Err: err}
	}
	raw = withFinalNewline(raw)
	if loc.Len > 0 && start >= 0 && end <= len(raw) {
		return decodeAt(r.Name, loc, raw[start:end])
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for doc := 1; doc <= loc.Doc; doc++ {
		chunk, err := reader.Read()
		if err != nil {
			return nil, &DecodeError{Source: fmt.Sprintf("%s#%d", r.Name, doc), Err: fmt.Errorf("document not found: %w", err)}
		}
		if doc == loc.Doc {
			return decodeAt(r.Name, loc, chunk)
		}
	}
	return nil, &DecodeError{Source: r.Name, Err: fmt.Errorf("document %d not found", loc.Doc)}
}

// decodeAt decodes the object at loc from its document's bytes.
func decodeAt(name string, loc Locator, chunk []byte) (*unstructured.Unstructured, error) {
	if n := len(chunk); n > 0 && chunk[n-1] != '\n' {
		// A span that ends a file without a final newline: the reader
		// Decode used added one, and a block scalar there keeps it. A
		// copy: chunk is the resource's own bytes.
		chunk = append(chunk[:n:n], '\n')
	}
	u := &unstructured.Unstructured{}
	if err := utilyaml.Unmarshal(chunk, &u.Object); err != nil {
		return nil, &DecodeError{Source: fmt.Sprintf("%s#%d", name, loc.Doc), Err: fmt.Errorf("invalid YAML: %w", err)}
	}
	if loc.Item < 0 {
		return u, nil
	}
	list, err := u.ToList()
	if err != nil || loc.Item >= len(list.Items) {
		return nil, &DecodeError{Source: fmt.Sprintf("%s#%d[%d]", name, loc.Doc, loc.Item), Err: fmt.Errorf("list item not found")}
	}
	return &list.Items[loc.Item], nil
}

// DecodeError says which file and document could not be decoded, and why.
type DecodeError struct {
	Source string
	Err    error
}

func (e *DecodeError) Error() string { return e.Source + ": " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// ErrEmptyBundle is returned for a Bundle that declares no object at all.
var ErrEmptyBundle = errors.New("the bundle declares no objects")

// Decode turns a Bundle's resources into desired objects: multi-document
// YAML or JSON, in the declared encoding, with List kinds expanded. It
// decodes every document it can and returns one DecodeError per document it
// cannot, so that one broken file does not hide the rest. Namespaces are not
// resolved here: that needs the cluster's REST mapping.
func Decode(resources []Resource) ([]Object, []error) {
	return DecodeWithin(resources, MaxDecodedBytes)
}

// DecodeWithin is Decode with a bound on the total decoded size.
func DecodeWithin(resources []Resource, max int64) ([]Object, []error) {
	var objs []Object
	var errs []error
	var total int64
	for ri, r := range resources {
		raw, err := decodeContent(r, max)
		if err != nil {
			errs = append(errs, &DecodeError{Source: r.Name, Err: err})
			continue
		}
		total += int64(len(raw))
		if total > max {
			errs = append(errs, &DecodeError{Source: r.Name,
				Err: fmt.Errorf("the bundle's resources exceed %d bytes decoded", max)})
			break
		}
		o, e := decodeDocuments(ri, r.Name, raw)
		objs = append(objs, o...)
		errs = append(errs, e...)
	}
	if len(objs) == 0 && len(errs) == 0 {
		errs = append(errs, ErrEmptyBundle)
	}
	return objs, errs
}

func decodeContent(r Resource, max int64) ([]byte, error) {
	switch r.Encoding {
	case EncodingNone:
		return []byte(r.Content), nil
	case EncodingBase64, EncodingBase64Gzip:
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Content))
		if err != nil {
			return nil, fmt.Errorf("invalid base64: %w", err)
		}
		if r.Encoding == EncodingBase64 {
			return b, nil
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("invalid gzip: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, max+1))
		if err != nil {
			return nil, fmt.Errorf("invalid gzip: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown encoding %q (want \"\", base64 or base64+gzip)", r.Encoding)
	}
}

func decodeDocuments(resource int, name string, raw []byte) ([]Object, []error) {
	size := int32(len(raw)) // spans stay within the resource's own bytes
	raw = withFinalNewline(raw)
	var objs []Object
	var errs []error
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	pos := 0 // where the next document starts, at the earliest
	for doc := 1; ; doc++ {
		chunk, err := reader.Read()
		if err == io.EOF {
			break
		}
		source := fmt.Sprintf("%s#%d", name, doc)
		if err != nil {
			errs = append(errs, &DecodeError{Source: source, Err: err})
			break // the reader cannot resynchronise after a read error
		}
		span := spanOf(raw, &pos, chunk)
		if span.Len > 0 && span.Offset+span.Len > size {
			span.Len = size - span.Offset // without the newline added: decodeAt adds it again
		}
		if isBlank(chunk) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(chunk, &u.Object); err != nil {
			errs = append(errs, &DecodeError{Source: source, Err: fmt.Errorf("invalid YAML: %w", err)})
			continue
		}
		if u.Object == nil {
			continue
		}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				errs = append(errs, &DecodeError{Source: source, Err: err})
				continue
			}
			for i := range list.Items {
				item := list.Items[i]
				src := fmt.Sprintf("%s[%d]", source, i)
				if err := validateObject(&item); err != nil {
					errs = append(errs, &DecodeError{Source: src, Err: err})
					continue
				}
				objs = append(objs, Object{Object: &item, Source: src, Locator: Locator{resource, doc, i, span.Offset, span.Len}})
			}
			continue
		}
		if err := validateObject(u); err != nil {
			errs = append(errs, &DecodeError{Source: source, Err: err})
			continue
		}
		objs = append(objs, Object{Object: u, Source: source, Locator: Locator{resource, doc, -1, span.Offset, span.Len}})
	}
	return objs, errs
}

// spanOf finds a document's bytes in raw, from *pos on, and moves *pos past
// them. The reader returns a document's lines as they are in raw, after
// its separator line, with each line ending in one "\n": the last line of
// a file without a final newline lacks it in raw. Files with "\r\n" line
// ends are not found (no span: DecodeAt scans); after one document is
// not found, the rest are not searched.
func spanOf(raw []byte, pos *int, chunk []byte) Locator {
	if *pos < 0 {
		return Locator{} // lost once: do not search the rest again
	}
	find := chunk
	i := bytes.Index(raw[*pos:], find)
	if i < 0 && len(find) > 0 && find[len(find)-1] == '\n' {
		find = find[:len(find)-1]
		i = bytes.Index(raw[*pos:], find)
	}
	if i < 0 || len(find) == 0 || *pos+i+len(find) > math.MaxInt32 {
		if i < 0 {
			*pos = -1
		}
		return Locator{}
	}
	start := *pos + i
	*pos = start + len(find)
	return Locator{Offset: int32(start), Len: int32(len(find))}
}

func validateObject(u *unstructured.Unstructured) error {
	if u.GetAPIVersion() == "" || u.GetKind() == "" {
		return errors.New("apiVersion and kind are required")
	}
	if u.GetName() == "" {
		if u.GetGenerateName() != "" {
			return fmt.Errorf("%s: generateName is not supported: an owned object needs a stable name", u.GetKind())
		}
		return fmt.Errorf("%s: metadata.name is required", u.GetKind())
	}
	return nil
}

// withFinalNewline ends raw with a newline: client-go's YAML reader loses
// a last line longer than its buffer (4 KiB) when no newline ends it —
// silently, with the document it belongs to.
func withFinalNewline(raw []byte) []byte {
	if n := len(raw); n > 0 && raw[n-1] != '\n' {
		return append(raw[:n:n], '\n')
	}
	return raw
}

func isBlank(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			return false
		}
	}
	return true
}

// ResourceBytes returns a resource's content, decoded from its encoding;
// one beyond HardMaxBytes is an error.
func ResourceBytes(r Resource) ([]byte, error) {
	b, err := decodeContent(r, HardMaxBytes)
	if err == nil && len(b) > HardMaxBytes {
		return nil, fmt.Errorf("%s exceeds %d bytes decoded", r.Name, HardMaxBytes)
	}
	return b, err
}
