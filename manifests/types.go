package manifests

import (
	"errors"

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
	// ServiceAccountName makes every read and write of the Bundle's
	// objects (apply, correction, prune, deletion, Helm releases, the
	// Secrets and ConfigMaps its render reads) act as this ServiceAccount
	// of the Bundle's own namespace, impersonated; never the agent's own
	// account. The agent's own identity then only watches and reports
	// status. Its namespace's BundleRestrictions may limit or default it.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// Resources are the Bundle's files.
	Resources []Resource `json:"resources,omitempty"`
	// Drift configures detection and correction.
	Drift DriftSpec `json:"drift,omitempty"`
	// Prune deletes owned objects that left the Bundle (default true).
	Prune *bool `json:"prune,omitempty"`
	// Adopt takes over existing objects that no Bundle owns.
	Adopt bool `json:"adopt,omitempty"`
	// KeepResourcesOnDelete leaves owned objects in place when the Bundle
	// is deleted (and, for a Helm chart, its release installed).
	KeepResourcesOnDelete bool `json:"keepResourcesOnDelete,omitempty"`
	// Helm makes the Bundle a Helm chart, installed as a real Helm
	// release; its resources are then the chart's files and values files.
	Helm *HelmSpec `json:"helm,omitempty"`
	// Kustomize makes the resources a kustomization tree, built at Dir.
	Kustomize *KustomizeSpec `json:"kustomize,omitempty"`
	// TargetCustomizations change the Bundle per cluster; the first that
	// matches the cluster's name and labels wins.
	TargetCustomizations []TargetCustomization `json:"targetCustomizations,omitempty"`
	// DependsOn are Bundles of the same namespace that must be Ready
	// before this one is applied.
	DependsOn []Dependency `json:"dependsOn,omitempty"`

	// Customized is set by Effective: what the chosen customization adds.
	Customized Customized `json:"-"`
}

// KustomizeSpec renders the Bundle's resources as a kustomization tree.
type KustomizeSpec struct {
	// Dir is the directory, among the resources' paths, whose
	// kustomization is built ("" or "." for the root).
	Dir string `json:"dir,omitempty"`
}

// Dependency names Bundles, by name or by a label selector.
type Dependency struct {
	Name     string                `json:"name,omitempty"`
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// HelmSpec is a Helm chart to install as a release.
type HelmSpec struct {
	// Chart is a path among the Bundle's resources (a chart directory,
	// or a packaged .tgz), a chart name in the HTTP(S) repository Repo,
	// or an oci:// reference.
	Chart string `json:"chart"`
	// Repo is the URL of an HTTP(S) chart repository (with index.yaml).
	Repo string `json:"repo,omitempty"`
	// Version is a semver constraint ("1.2.3", "~1.2", ">=1.0 <2"),
	// resolved against the repository's index or the registry's tags;
	// empty means the newest stable version.
	Version string `json:"version,omitempty"`
	// ReleaseName defaults to the Bundle's name.
	ReleaseName string `json:"releaseName,omitempty"`
	// Values override everything else.
	Values map[string]any `json:"values,omitempty"`
	// ValuesFiles are resources of the Bundle, merged in order.
	ValuesFiles []string `json:"valuesFiles,omitempty"`
	// ValuesFrom are keys of ConfigMaps or Secrets in the target cluster,
	// merged in order after ValuesFiles; a change re-renders the chart.
	ValuesFrom []ValuesReference `json:"valuesFrom,omitempty"`
	// MaxHistory bounds the release's revisions (default 10).
	MaxHistory *int `json:"maxHistory,omitempty"`
	// Atomic rolls a failed upgrade back (and uninstalls a failed install).
	Atomic bool `json:"atomic,omitempty"`
	// TimeoutSeconds bounds each Helm operation, hooks and waits (default 300).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// Wait waits for the release's objects to be ready before it is
	// marked deployed.
	Wait bool `json:"wait,omitempty"`
	// WaitForJobs also waits for the release's Jobs to complete.
	WaitForJobs bool `json:"waitForJobs,omitempty"`
	// TakeOwnership adopts objects that no Helm release owns.
	TakeOwnership bool `json:"takeOwnership,omitempty"`
	// SkipCRDs does not install the chart's crds/ directory.
	SkipCRDs bool `json:"skipCRDs,omitempty"`
	// CredentialsSecret names a Secret in the Bundle's namespace with the
	// repository's or registry's username, password and ca.crt.
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
	// Insecure talks plain HTTP to an OCI registry.
	Insecure bool `json:"insecure,omitempty"`
}

// ValuesReference is one key of a ConfigMap or of a Secret holding values:
// exactly one of the two is set (as in Fleet's fleet.yaml).
type ValuesReference struct {
	ConfigMapKeyRef *KeySelector `json:"configMapKeyRef,omitempty"`
	SecretKeyRef    *KeySelector `json:"secretKeyRef,omitempty"`
}

// KeySelector names one key of a ConfigMap or Secret.
type KeySelector struct {
	Name string `json:"name"`
	// Namespace defaults to the release's namespace.
	Namespace string `json:"namespace,omitempty"`
	// Key defaults to values.yaml.
	Key string `json:"key,omitempty"`
	// Optional: a missing object or key is no error.
	Optional bool `json:"optional,omitempty"`
}

// Selector returns the kind (ConfigMap or Secret) and the key selector of
// v, or an error unless exactly one of them is set.
func (v ValuesReference) Selector() (string, KeySelector, error) {
	switch {
	case v.ConfigMapKeyRef != nil && v.SecretKeyRef == nil:
		return "ConfigMap", *v.ConfigMapKeyRef, nil
	case v.SecretKeyRef != nil && v.ConfigMapKeyRef == nil:
		return "Secret", *v.SecretKeyRef, nil
	}
	return "", KeySelector{}, errors.New("set exactly one of configMapKeyRef and secretKeyRef")
}

// DefaultMaxHistory is a release's revisions kept when MaxHistory is unset.
const DefaultMaxHistory = 10

// DefaultHelmTimeout bounds a Helm operation when TimeoutSeconds is unset.
const DefaultHelmTimeout = 300

// ReleaseNameFor is the Helm release's name: ReleaseName or the Bundle's.
func (h *HelmSpec) ReleaseNameFor(bundle string) string {
	if h.ReleaseName != "" {
		return h.ReleaseName
	}
	return bundle
}

// ReleaseNamespace is where a Helm Bundle's release lives, and where its
// namespaced objects go when they name no namespace: targetNamespace,
// else defaultNamespace, else "default".
func (s *BundleSpec) ReleaseNamespace() string {
	switch {
	case s.TargetNamespace != "":
		return s.TargetNamespace
	case s.DefaultNamespace != "":
		return s.DefaultNamespace
	}
	return "default"
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
	// DriftPrevent denies, at admission, writes by anyone but the Bundle's
	// acting identity that change a field the Bundle owns (a
	// ValidatingAdmissionPolicy the agent maintains), and corrects what
	// gets through as Correct does.
	DriftPrevent DriftMode = "Prevent"
	// DriftWarn is Prevent with warnings and audit annotations instead of
	// denials: the editor sees what would be denied; drift is corrected.
	DriftWarn DriftMode = "Warn"
)

// DriftSpec configures drift detection and correction.
type DriftSpec struct {
	Mode DriftMode `json:"mode,omitempty"`
	// Force takes fields back on apply conflicts (default true).
	Force *bool `json:"force,omitempty"`
	// Ignore lists fields that are never drift.
	Ignore []IgnoreRule `json:"ignore,omitempty"`
	// PreventDeletion, in Prevent and Warn mode, also denies (or warns
	// about) deleting an owned object to anyone but the Bundle's acting
	// identity.
	PreventDeletion bool `json:"preventDeletion,omitempty"`
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
	// ConditionGuarded, for Bundles in Prevent or Warn mode, says whether
	// the admission policy that guards their fields is in place.
	ConditionGuarded = "Guarded"
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
	// Customization is the target customization applied on this cluster.
	Customization string `json:"customization,omitempty"`
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

// Guarded reports whether drift is to be prevented at admission (Prevent)
// or warned about there (Warn).
func (d *DriftSpec) Guarded() bool { return d.Mode == DriftPrevent || d.Mode == DriftWarn }
