package drift

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/drift/status"
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
	finding detect.Finding
	seen    time.Time // when the event that showed it arrived
}

// fightKey is one field of one object taken by one manager.
type fightKey = status.FightKey

// fight counts how often a field was taken back from the same manager,
// and backs corrections off (status.Backoff).
type fight struct {
	hits []time.Time
	status.Backoff
}

// Bounds on what a Bundle's state keeps per field manager: the names are
// anyone's to choose (a new --field-manager per edit), so series and
// fights keyed by them must not grow without end.
const (
	// maxManagerLabels is how many field managers get metric series of
	// their own per Bundle; the others are counted as otherManagers.
	maxManagerLabels = 16
	otherManagers    = "other"
	// maxFights bounds the fields-by-manager a Bundle tracks at once.
	maxFights = 1024
)

// managerLabel is the manager label of m in the Bundle's metric series.
// The caller holds s.mu.
func (s *bundleState) managerLabel(m string) string {
	if s.managers[m] || len(s.managers) < maxManagerLabels {
		s.managers[m] = true
		return m
	}
	return otherManagers
}

// roomForFight reports whether another fight may be tracked, after
// dropping those that are over: no take within window, no back-off. The
// caller holds s.mu.
func (s *bundleState) roomForFight(now time.Time, window time.Duration) bool {
	if len(s.fights) < maxFights {
		return true
	}
	for k, f := range s.fights {
		if !f.Active(now) && (len(f.hits) == 0 || now.Sub(f.hits[len(f.hits)-1]) >= window) {
			delete(s.fights, k)
		}
	}
	return len(s.fights) < maxFights
}

// bundleState is everything the controller knows about one Bundle.
//
// Who writes what: the Bundle's sync (one at a time per Bundle, the
// queue's guarantee; finalize is a sync) alone writes spec, generation,
// rendered, act, desired, declared, renderFailures, bundleErrors,
// refused, waiting, releasing, inv, parentLoaded, access and the guard's. Checks, corrections,
// pod handling — informer handlers and the correction workers — write
// drifted, fights, managers, crashes, inFlight (claimed), and a
// correction its outcome in applied, problems and the counters; the
// status worker only reads. Every write takes mu; every read takes mu too,
// except the sync's reads of the fields it alone writes. key and set never change. Lock order:
// Controller.mu before bundleState.mu, never the other way round; no API
// call is made while mu is held.
type bundleState struct {
	mu  sync.Mutex
	key types.NamespacedName
	set ownership.Set
	// spec is the effective spec of the last sync (the Bundle's own while
	// none has rendered); generation the Bundle's generation it saw.
	spec       manifests.BundleSpec
	generation int64
	// rendered is the last sync's render, without its objects: what a
	// correction reads its one object from.
	rendered *manifests.Rendered
	declared int // objects rendered, valid or not
	// renderFailures counts documents that could not be rendered.
	renderFailures int

	// act reads and writes the Bundle's objects: the agent's Applier, or
	// one impersonating the Bundle's ServiceAccount (applierFor); nil
	// until a sync rendered. access is whom it acts as.
	act    *apply.Applier
	access manifests.Access
	// guardHash is the content of the admission policy last written for
	// the Bundle (Prevent and Warn mode, guard.go), "" when none;
	// guardErr why it could not be written.
	guardHash, guardErr string

	desired  map[manifests.ObjectRef]apply.Desired
	applied  map[manifests.ObjectRef]*apply.Applied
	problems map[manifests.ObjectRef]status.Problem
	drifted  map[manifests.ObjectRef]driftInfo
	// inFlight marks objects that a write of ours is changing: their
	// events show our own write, not drift. Taken and released by
	// Controller.claimed.
	inFlight map[manifests.ObjectRef]bool
	fights   map[fightKey]*fight
	// managers are the field managers with metric series of their own
	// (managerLabel).
	managers map[string]bool
	// crashes are the Pods behind owned objects that crash now.
	crashes map[types.NamespacedName]status.PodCrash
	// bundleErrors are errors that belong to no single object (rendering).
	bundleErrors []string
	// refused says which rule refuses the Bundle (tenancy); "" when none.
	refused string
	// waiting says what the Bundle waits for (spec.dependsOn); "" when
	// nothing.
	waiting string
	// releasing is set while a render may write the objects (a Helm
	// install or upgrade): their events show that write, not drift.
	releasing bool

	// inv is what the Bundle owns, as its ApplySet parent records it
	// (sync_prune.go); parentLoaded says the parent was read or written by
	// this process.
	inv          ownership.Inventory
	parentLoaded bool
	corrections  int64
	lastApplied  time.Time
	lastDrift    time.Time
}

func newBundleState(key types.NamespacedName, set ownership.Set) *bundleState {
	return &bundleState{
		key: key, set: set,
		desired:  map[manifests.ObjectRef]apply.Desired{},
		applied:  map[manifests.ObjectRef]*apply.Applied{},
		problems: map[manifests.ObjectRef]status.Problem{},
		drifted:  map[manifests.ObjectRef]driftInfo{},
		inFlight: map[manifests.ObjectRef]bool{},
		fights:   map[fightKey]*fight{},
		managers: map[string]bool{},
		crashes:  map[types.NamespacedName]status.PodCrash{},
	}
}

// claimed runs write with refs marked in flight — the events that our
// own write causes are then not taken for drift — and releases the marks
// when write returns, however it returns: this is the one place where
// marks are taken and released, because a mark never released would hide
// that object's drift for good. Whoever records the write's outcome does
// it inside write; whoever looks at the cache again afterwards does it
// after claimed returns.
func (c *Controller) claimed(s *bundleState, refs []manifests.ObjectRef, write func() error) error {
	s.mu.Lock()
	for _, ref := range refs {
		s.inFlight[ref] = true
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for _, ref := range refs {
			delete(s.inFlight, ref)
		}
		s.mu.Unlock()
	}()
	return write()
}

// ours reports whether a write of the agent's own is changing ref now — a
// correction or apply in flight, or a Helm operation on the Bundle's
// release — so that what its events show is that write, not drift. The
// caller holds s.mu.
func (s *bundleState) ours(ref manifests.ObjectRef) bool { return s.inFlight[ref] || s.releasing }

// ignoreFor returns the ignored field paths that apply to ref. The
// caller holds s.mu, or is the Bundle's sync.
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

// hasLocked reports whether the Bundle declares or applied ref, under its
// lock.
func (s *bundleState) hasLocked(ref manifests.ObjectRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.has(ref)
}

// has reports whether the Bundle declares or applied ref. The caller holds
// s.mu.
func (s *bundleState) has(ref manifests.ObjectRef) bool {
	if _, ok := s.desired[ref]; ok {
		return true
	}
	return s.applied[ref] != nil
}

// corrects reports whether drift is corrected, not only reported.
func (s *bundleState) corrects() bool {
	return !s.spec.Paused && !s.spec.Drift.DetectOnly() && s.refused == ""
}

// target is where the Bundle's objects go (apply.TargetOf). The caller
// holds s.mu, or is the Bundle's sync.
func (s *bundleState) target() apply.Target { return apply.TargetOf(s.set, &s.spec) }

// actor is the Applier of the Bundle's objects; own until a sync chose.
// The caller holds s.mu.
func (s *bundleState) actor(own *apply.Applier) *apply.Applier {
	if s.act != nil {
		return s.act
	}
	return own
}

// state returns the state of a Bundle; nil before its first sync.
func (c *Controller) state(key types.NamespacedName) *bundleState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states[key]
}
