package manifests

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// RestrictionKind is the kind of the admin-owned restriction on the
// Bundles of one namespace.
const RestrictionKind = "BundleRestriction"

// RestrictionGVR is the resource of BundleRestrictions.
var RestrictionGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "bundlerestrictions"}

// BundleRestriction is what the owner of a namespace allows the Bundles in
// it (Fleet's GitRepoRestriction, Argo CD's AppProject destinations). It
// is meant to be written by the namespace's administrator, never by the
// teams that write Bundles there. Every restriction of a namespace
// applies: a Bundle must satisfy all of them.
type BundleRestriction struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RestrictionSpec `json:"spec"`
}

// RestrictionSpec is what a BundleRestriction allows. Empty lists allow
// anything of their kind.
type RestrictionSpec struct {
	// AllowedTargetNamespaces are patterns (path.Match: *, ?, [a-z]) one of
	// which a Bundle's targetNamespace must match; when set, a Bundle
	// without a targetNamespace is refused.
	AllowedTargetNamespaces []string `json:"allowedTargetNamespaces,omitempty"`
	// AllowedServiceAccounts are patterns one of which the name of the
	// ServiceAccount a Bundle acts as must match; when set, a Bundle that
	// would act as the agent itself is refused.
	AllowedServiceAccounts []string `json:"allowedServiceAccounts,omitempty"`
	// DefaultServiceAccount is the account of Bundles that name none,
	// before the agent's --default-service-account.
	DefaultServiceAccount string `json:"defaultServiceAccount,omitempty"`
	// AllowedRepoPatterns are regular expressions (anchored) one of which
	// a Helm Bundle's chart source (repo, or an oci:// chart) must match.
	AllowedRepoPatterns []string `json:"allowedRepoPatterns,omitempty"`
	// AllowInsecureRepositories lets Bundles send repository credentials
	// over plain HTTP (an http:// repository, or an OCI registry with
	// spec.helm.insecure). Without it such credentials are never sent.
	AllowInsecureRepositories bool `json:"allowInsecureRepositories,omitempty"`
}

// Access is what a Bundle may do and as whom, settled from its namespace's
// restrictions and the agent's settings before anything of it is rendered
// or read.
type Access struct {
	// ServiceAccount is what the Bundle reads and writes as, in the
	// target cluster (impersonated); the zero value is the agent itself.
	ServiceAccount types.NamespacedName
	// AllowInsecure lets repository credentials travel over plain HTTP.
	AllowInsecure bool
}

// Agent reports whether the Bundle acts with the agent's own identity.
func (a Access) Agent() bool { return a.ServiceAccount.Name == "" }

// An Admitter settles a Bundle's Access from its effective spec, or says
// which rule refuses it.
type Admitter interface {
	Admit(bundle types.NamespacedName, spec *BundleSpec) (Access, error)
}

// Refused says that a Bundle is outside what its namespace's owner or the
// agent allows; nothing of it is rendered, read or applied. Rule names the
// rule ("BundleRestriction team-a/default: allowedTargetNamespaces").
type Refused struct {
	Rule    string
	Message string
}

func (e *Refused) Error() string { return "refused by " + e.Rule + ": " + e.Message }
