package drift

import (
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// objKey locates an object in an informer cache.
type objKey struct {
	GVR       schema.GroupVersionResource
	Namespace string
	Name      string
}

// fixKey is an item of the correction queue.
type fixKey struct {
	Bundle types.NamespacedName
	Ref    manifests.ObjectRef
}

// driftInfo is a drift seen and not yet corrected.
type driftInfo struct {
	finding Finding
	seen    time.Time // when the event that showed it arrived
}

// problem is an object that failed to apply or is in conflict.
type problem struct {
	state   manifests.ResourceState
	manager string
	message string
}

// fightKey is one field of one object taken by one manager.
type fightKey struct {
	Ref     manifests.ObjectRef
	Field   string
	Manager string
}

// fight counts how often a field was taken back from the same manager.
type fight struct {
	hits    []time.Time
	backoff time.Duration
	until   time.Time
}

// bundleState is everything the controller knows about one Bundle. It is
// guarded by Controller.mu.
type bundleState struct {
	key        types.NamespacedName
	set        ownership.Set
	spec       manifests.BundleSpec
	generation int64
	declared   int // objects decoded from the resources, valid or not
	// decodeFailures counts documents that could not be decoded.
	decodeFailures int

	desired  map[manifests.ObjectRef]apply.Desired
	applied  map[manifests.ObjectRef]*apply.Applied
	problems map[manifests.ObjectRef]problem
	drifted  map[manifests.ObjectRef]driftInfo
	inFlight map[manifests.ObjectRef]bool
	fights   map[fightKey]*fight
	// crashes are the Pods behind owned objects that crash now.
	crashes map[types.NamespacedName]podCrashState
	// bundleErrors are errors that belong to no single object (decoding).
	bundleErrors []string

	parentHash  string // of the ApplySet parent last applied
	corrections int64
	lastApplied time.Time
	lastDrift   time.Time
}

func newBundleState(key types.NamespacedName, set ownership.Set) *bundleState {
	return &bundleState{
		key: key, set: set,
		desired:  map[manifests.ObjectRef]apply.Desired{},
		applied:  map[manifests.ObjectRef]*apply.Applied{},
		problems: map[manifests.ObjectRef]problem{},
		drifted:  map[manifests.ObjectRef]driftInfo{},
		inFlight: map[manifests.ObjectRef]bool{},
		fights:   map[fightKey]*fight{},
		crashes:  map[types.NamespacedName]podCrashState{},
	}
}

// ignoreFor returns the ignored field paths that apply to ref.
func (s *bundleState) ignoreFor(ref manifests.ObjectRef) []string {
	var out []string
	for _, r := range s.spec.Drift.Ignore {
		if (r.Group == "" || r.Group == ref.Group) && (r.Kind == "" || r.Kind == ref.Kind) &&
			(r.Namespace == "" || r.Namespace == ref.Namespace) && (r.Name == "" || r.Name == ref.Name) {
			out = append(out, r.FieldPaths...)
		}
	}
	return out
}

// has reports whether the Bundle declares or applied ref.
func (s *bundleState) has(ref manifests.ObjectRef) bool {
	if _, ok := s.desired[ref]; ok {
		return true
	}
	return s.applied[ref] != nil
}

func keyOf(d apply.Desired) objKey {
	return objKey{GVR: d.GVR, Namespace: d.Ref.Namespace, Name: d.Ref.Name}
}
