package manifests

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of the Bundle API.
const (
	Group   = "driftwatch.io"
	Version = "v1alpha1"
	Kind    = "Bundle"
)

// BundleGVR is the resource of Bundles.
var BundleGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "bundles"}

// Bundle declares one unit of desired state for a target cluster.
type Bundle struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BundleSpec   `json:"spec"`
	Status            BundleStatus `json:"status,omitempty"`
}

// BundleSpec is what a Bundle declares.
type BundleSpec struct {
	// Paused stops applying and correcting; status is still reported.
	Paused bool `json:"paused,omitempty"`
	// DefaultNamespace is used for namespaced objects that name none.
	DefaultNamespace string `json:"defaultNamespace,omitempty"`
	// TargetNamespace forces every namespaced object into this namespace;
	// cluster-scoped objects are then refused.
	TargetNamespace string `json:"targetNamespace,omitempty"`
	// Resources are the Bundle's files.
	Resources []Resource `json:"resources,omitempty"`
	// Drift configures detection and correction.
	Drift DriftSpec `json:"drift,omitempty"`
	// Prune deletes owned objects that left the Bundle (default true).
	Prune *bool `json:"prune,omitempty"`
	// Adopt takes over existing objects that no Bundle owns.
	Adopt bool `json:"adopt,omitempty"`
	// KeepResourcesOnDelete leaves owned objects in place when the Bundle
	// is deleted.
	KeepResourcesOnDelete bool `json:"keepResourcesOnDelete,omitempty"`
}

// Resource is one file of a Bundle.
type Resource struct {
	Name     string   `json:"name"`
	Content  string   `json:"content"`
	Encoding Encoding `json:"encoding,omitempty"`
}

// Encoding says how a Resource's content is encoded.
type Encoding string

// The encodings of a Resource's content.
const (
	EncodingNone       Encoding = ""
	EncodingBase64     Encoding = "base64"
	EncodingBase64Gzip Encoding = "base64+gzip"
)

// DriftMode says what to do about drift.
type DriftMode string

// The drift modes.
const (
	// DriftCorrect re-applies drifted objects at once.
	DriftCorrect DriftMode = "Correct"
	// DriftDetect only reports drift.
	DriftDetect DriftMode = "Detect"
)

// DriftSpec configures drift detection and correction.
type DriftSpec struct {
	Mode DriftMode `json:"mode,omitempty"`
	// Force takes fields back on apply conflicts (default true).
	Force *bool `json:"force,omitempty"`
	// Ignore lists fields that are never drift.
	Ignore []IgnoreRule `json:"ignore,omitempty"`
}

// IgnoreRule names fields of matching objects that are never drift. Empty
// selectors match everything.
type IgnoreRule struct {
	Group      string   `json:"group,omitempty"`
	Kind       string   `json:"kind,omitempty"`
	Namespace  string   `json:"namespace,omitempty"`
	Name       string   `json:"name,omitempty"`
	FieldPaths []string `json:"fieldPaths"`
}

// Condition types of a Bundle.
const (
	ConditionReady   = "Ready"
	ConditionSynced  = "Synced"
	ConditionDrifted = "Drifted"
	ConditionStalled = "Stalled"
)

// BundleStatus is what the agent reports.
type BundleStatus struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
	Summary            Summary            `json:"summary,omitempty"`
	// Resources lists only objects that are not ready, drifted, failed or
	// in conflict, at most MaxStatusResources of them.
	Resources        []ResourceStatus `json:"resources,omitempty"`
	LastAppliedTime  *metav1.Time     `json:"lastAppliedTime,omitempty"`
	LastDriftTime    *metav1.Time     `json:"lastDriftTime,omitempty"`
	DriftCorrections int64            `json:"driftCorrections,omitempty"`
}

// MaxStatusResources caps BundleStatus.Resources.
const MaxStatusResources = 20

// Summary counts a Bundle's objects by state.
type Summary struct {
	Desired   int `json:"desired"`
	Ready     int `json:"ready"`
	NotReady  int `json:"notReady"`
	Missing   int `json:"missing"`
	Drifted   int `json:"drifted"`
	Conflicts int `json:"conflicts"`
	Failed    int `json:"failed"`
}

// ResourceState is the state of one object in a Bundle's status.
type ResourceState string

// The states of an object in a Bundle's status.
const (
	StateReady    ResourceState = "Ready"
	StateNotReady ResourceState = "NotReady"
	StateMissing  ResourceState = "Missing"
	StateDrifted  ResourceState = "Drifted"
	StateConflict ResourceState = "Conflict"
	StateFailed   ResourceState = "Failed"
)

// ResourceStatus describes one object that needs attention.
type ResourceStatus struct {
	APIVersion string        `json:"apiVersion,omitempty"`
	Kind       string        `json:"kind,omitempty"`
	Namespace  string        `json:"namespace,omitempty"`
	Name       string        `json:"name,omitempty"`
	State      ResourceState `json:"state"`
	Fields     []string      `json:"fields,omitempty"`
	ChangedBy  string        `json:"changedBy,omitempty"`
	Message    string        `json:"message,omitempty"`
}

// PruneEnabled reports whether owned objects that left the Bundle are deleted.
func (s *BundleSpec) PruneEnabled() bool { return s.Prune == nil || *s.Prune }

// ForceEnabled reports whether applies take fields back on conflicts.
func (d *DriftSpec) ForceEnabled() bool { return d.Force == nil || *d.Force }

// DetectOnly reports whether drift is only reported.
func (d *DriftSpec) DetectOnly() bool { return d.Mode == DriftDetect }
