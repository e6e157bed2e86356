package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unique"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/driftwatch/driftwatch/manifests"
)

// Action is what an apply did to one object.
type Action string

// The actions.
const (
	Created    Action = "Created"
	Configured Action = "Configured"
	Unchanged  Action = "Unchanged"
	Deleted    Action = "Deleted"
	Failed     Action = "Failed"
	Refused    Action = "Refused"
)

// Desired is one object ready to apply: stamped, its namespace resolved.
// The object is held as the JSON that is sent — a fraction of the memory of
// an unstructured map, which matters at tens of thousands of objects.
type Desired struct {
	Ref        manifests.ObjectRef
	GVR        schema.GroupVersionResource
	APIVersion string
	// JSON is the apply request body. Long-lived copies drop it (see
	// Locator) to keep memory per owned object small.
	JSON []byte
	// Locator finds the object in its Bundle again.
	Locator manifests.Locator
	// Hash identifies the desired content; equal hashes need no write.
	Hash string
	// Source is where the object was declared ("file.yaml#2").
	Source string
	// Keep: never pruned nor deleted with its Bundle (manifests.KeepAnnotation).
	Keep bool
}

// NewDesired prepares obj for applying: its hash goes into HashAnnotation
// and the object is serialised once. Preparing a prepared object again
// gives the same object.
func NewDesired(obj *unstructured.Unstructured, gvr schema.GroupVersionResource, source string) (Desired, error) {
	if ann := obj.GetAnnotations(); ann[HashAnnotation] != "" {
		// Prepared before (a Helm release's stored manifest): the hash is
		// of the content without it, so preparing again changes nothing.
		delete(ann, HashAnnotation)
		if len(ann) == 0 {
			ann = nil
		}
		obj.SetAnnotations(ann)
	}
	hash, err := Hash(obj)
	if err != nil {
		return Desired{}, err
	}
	SetHash(obj, hash)
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return Desired{}, err
	}
	// Kept per owned object for as long as it is owned: the strings that
	// every object of a kind and namespace repeats are stored once.
	ref := manifests.RefOf(obj)
	ref.Group, ref.Kind, ref.Namespace = intern(ref.Group), intern(ref.Kind), intern(ref.Namespace)
	gvr = schema.GroupVersionResource{Group: intern(gvr.Group), Version: intern(gvr.Version), Resource: intern(gvr.Resource)}
	return Desired{Ref: ref, GVR: gvr, APIVersion: intern(obj.GetAPIVersion()), JSON: body, Hash: hash, Source: source,
		Keep: obj.GetAnnotations()[manifests.KeepAnnotation] == "true"}, nil
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Object decodes the object to apply.
func (d Desired) Object() (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(d.JSON); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Ref, err)
	}
	return u, nil
}

// WithObject returns d applying obj instead (same identity and hash).
func (d Desired) WithObject(obj *unstructured.Unstructured) (Desired, error) {
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return d, err
	}
	d.JSON = body
	return d, nil
}

// Applied is the recorded applied state of one object: what the server
// returned after our last apply.
type Applied struct {
	ResourceVersion string
	// Fields is our field manager's Apply entry (fieldsV1 JSON): what we
	// own. Kept serialised, parsed only when an event needs it; built with
	// the fieldsv1string tag, apimachinery interns these strings, and
	// objects of the same shape share one.
	Fields string
	// Hash of the desired object that was applied.
	Hash string
}

// Result is the outcome of applying one object.
type Result struct {
	Desired Desired
	Action  Action
	Applied *Applied
	Err     error
	// Duration of the API call.
	Duration time.Duration
}

// HashAnnotation on an owned object holds the Hash of the desired content
// last applied, so that a restarted agent can tell, from its cache alone,
// that an object is current and need not be written.
const HashAnnotation = "driftwatch.io/applied-hash"

// SetHash records hash in obj's HashAnnotation.
func SetHash(obj *unstructured.Unstructured, hash string) {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[HashAnnotation] = hash
	obj.SetAnnotations(ann)
}

// Hash returns a digest of an object's desired content.
func Hash(obj *unstructured.Unstructured) (string, error) {
	b, err := json.Marshal(obj.Object) // encoding/json sorts map keys: stable
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}

// FieldSet parses the recorded fields.
func (a *Applied) FieldSet() (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	if len(a.Fields) == 0 {
		return s, nil
	}
	if err := s.FromJSON(strings.NewReader(a.Fields)); err != nil {
		return nil, err
	}
	return s, nil
}
