package ownership

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
)

// Labels and annotations that mark ownership. The applyset.kubernetes.io
// names are KEP-3659's, so that kubectl sees a Bundle's objects as a set.
const (
	// PartOfLabel on an owned object holds its ApplySet's ID.
	PartOfLabel = "applyset.kubernetes.io/part-of"
	// IDLabel on the ApplySet parent holds the set's ID.
	IDLabel = "applyset.kubernetes.io/id"
	// ToolingAnnotation on the parent names the tool that manages the set.
	ToolingAnnotation = "applyset.kubernetes.io/tooling"
	// ContainsGroupKindsAnnotation on the parent lists the set's kinds.
	ContainsGroupKindsAnnotation = "applyset.kubernetes.io/contains-group-kinds"
	// AdditionalNamespacesAnnotation on the parent lists the namespaces,
	// other than the parent's, that hold members.
	AdditionalNamespacesAnnotation = "applyset.kubernetes.io/additional-namespaces"

	// BundleLabel names the owning Bundle in a label-safe form; informers
	// select owned objects on its presence.
	BundleLabel = "driftwatch.io/bundle"
	// BundleAnnotation names the owning Bundle exactly: namespace/name.
	BundleAnnotation = "driftwatch.io/bundle"

	// Tooling is the value of ToolingAnnotation.
	Tooling = "driftwatch/v1alpha1"
)

// Bundle identifies a Bundle in the source cluster.
type Bundle = types.NamespacedName

// Set is the ApplySet of one Bundle: its parent object in the target cluster
// and the ID every member carries.
type Set struct {
	Bundle Bundle
	// ParentNamespace and ParentName locate the parent ConfigMap.
	ParentNamespace string
	ParentName      string
	// ID is the ApplySet ID, derived from the parent as KEP-3659 says.
	ID string
}

// NewSet returns the ApplySet of bundle, whose parent ConfigMap lives in
// parentNamespace of the target cluster (the agent's own namespace).
func NewSet(bundle Bundle, parentNamespace string) Set {
	name := labelSafe(parentPrefix+bundle.Namespace+"-"+bundle.Name, 253)
	return Set{Bundle: bundle, ParentNamespace: parentNamespace, ParentName: name,
		ID: applySetID(name, parentNamespace, "ConfigMap", "")}
}

// applySetID is KEP-3659's ID: base64url(sha256(name.namespace.kind.group)).
func applySetID(name, namespace, kind, group string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{name, namespace, kind, group}, ".")))
	return "applyset-" + base64.RawURLEncoding.EncodeToString(sum[:]) + "-v1"
}

// BundleLabelValue is the BundleLabel value for a Bundle: namespace.name,
// shortened with a hash suffix when it would not fit a label value.
func BundleLabelValue(b Bundle) string { return labelSafe(b.Namespace+"."+b.Name, 63) }

func labelSafe(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	suffix := hex.EncodeToString(sum[:])[:10]
	return strings.TrimRight(s[:max-11], "-.") + "-" + suffix
}

// Stamp adds the ownership labels and annotation to a desired object.
func (s Set) Stamp(obj *unstructured.Unstructured) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[PartOfLabel] = s.ID
	labels[BundleLabel] = BundleLabelValue(s.Bundle)
	obj.SetLabels(labels)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[BundleAnnotation] = s.Bundle.String()
	obj.SetAnnotations(ann)
}

// ParentGVR is the resource of ApplySet parents: driftwatch's are
// ConfigMaps in the agent's namespace of the target cluster.
var ParentGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// ParentRef returns the identity of the set's parent ConfigMap.
func (s Set) ParentRef() manifests.ObjectRef {
	return manifests.ObjectRef{Kind: "ConfigMap", Namespace: s.ParentNamespace, Name: s.ParentName}
}

// Owns reports whether an object with these labels belongs to the set.
func (s Set) Owns(labels map[string]string) bool { return labels[PartOfLabel] == s.ID }

// ErrOwnedByOther says an object belongs to another Bundle (or another
// ApplySet tool); it is never taken.
type ErrOwnedByOther struct {
	// Owner is the other Bundle (namespace/name), or the ApplySet ID when
	// no Bundle annotation names it.
	Owner string
}

func (e *ErrOwnedByOther) Error() string {
	return "already owned by bundle " + e.Owner
}

// ErrNotAdopted says an object exists that no Bundle owns, and the Bundle
// does not ask to adopt it.
var ErrNotAdopted = errors.New("exists and is not owned by any bundle; set spec.adopt to take it over")

// Admit decides whether the set may apply over an existing object with the
// given metadata; nil metadata means the object does not exist.
func (s Set) Admit(existing metav1.Object, adopt bool) error {
	if existing == nil {
		return nil
	}
	labels := existing.GetLabels()
	partOf, ok := labels[PartOfLabel]
	switch {
	case ok && partOf == s.ID:
		return nil
	case ok:
		owner := existing.GetAnnotations()[BundleAnnotation]
		if owner == "" {
			owner = partOf
		}
		return &ErrOwnedByOther{Owner: owner}
	case adopt:
		return nil
	default:
		return ErrNotAdopted
	}
}

// Parent returns the set's parent ConfigMap, listing the group-kinds and the
// namespaces of its members as KEP-3659 asks.
func (s Set) Parent(kinds []schema.GroupKind, namespaces []string) *unstructured.Unstructured {
	gks := make([]string, 0, len(kinds))
	seen := map[string]bool{}
	for _, gk := range kinds {
		k := gk.Kind
		if gk.Group != "" {
			k += "." + gk.Group
		}
		if !seen[k] {
			seen[k] = true
			gks = append(gks, k)
		}
	}
	sort.Strings(gks)
	var extra []string
	seen = map[string]bool{}
	for _, ns := range namespaces {
		if ns != "" && ns != s.ParentNamespace && !seen[ns] {
			seen[ns] = true
			extra = append(extra, ns)
		}
	}
	sort.Strings(extra)
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ConfigMap")
	u.SetNamespace(s.ParentNamespace)
	u.SetName(s.ParentName)
	u.SetLabels(map[string]string{IDLabel: s.ID})
	u.SetAnnotations(map[string]string{
		ToolingAnnotation:              Tooling,
		ContainsGroupKindsAnnotation:   strings.Join(gks, ","),
		AdditionalNamespacesAnnotation: strings.Join(extra, ","),
		BundleAnnotation:               s.Bundle.String(),
	})
	return u
}

// ParseGroupKinds reads a parent's contains-group-kinds annotation.
func ParseGroupKinds(v string) []schema.GroupKind {
	var out []schema.GroupKind
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, schema.ParseGroupKind(s))
		}
	}
	return out
}

// String formats a set for messages.
func (s Set) String() string {
	return fmt.Sprintf("%s (parent ConfigMap %s/%s)", s.ID, s.ParentNamespace, s.ParentName)
}

// Objects of the agent's own namespace that the agent relies on: no Bundle
// may declare them, whatever account it acts as.
const (
	// ClusterConfigMap holds the cluster's labels for target
	// customisations; writing it would re-render every Bundle.
	ClusterConfigMap = "driftwatch-cluster"
	// LeaderLease is the leader election's Lease.
	LeaderLease = "driftwatch-leader"
	// parentPrefix begins every ApplySet parent's name (NewSet).
	parentPrefix = "bundle-"
)

// ErrReserved says a Bundle declares an object it may not: one the agent
// relies on, or one in the agent's namespace while the Bundle lives in
// another.
type ErrReserved struct {
	Ref    manifests.ObjectRef
	Reason string
}

func (e *ErrReserved) Error() string { return e.Reason }

// Reserved says why the set's Bundle may not declare ref (its namespace
// settled), nil when it may. The agent's namespace (ParentNamespace) holds
// the ApplySet parents of every Bundle, the cluster ConfigMap and the
// leader Lease: no Bundle writes those, and only Bundles that live in that
// namespace write anything there.
func (s Set) Reserved(ref manifests.ObjectRef) error {
	if ref.Namespace == "" || ref.Namespace != s.ParentNamespace {
		return nil
	}
	if s.Bundle.Namespace != s.ParentNamespace {
		return &ErrReserved{Ref: ref, Reason: fmt.Sprintf("namespace %s is the agent's own; only Bundles that live there may write to it", ref.Namespace)}
	}
	switch {
	case ref.Group == "" && ref.Kind == "ConfigMap" && ref.Name == ClusterConfigMap:
		return &ErrReserved{Ref: ref, Reason: fmt.Sprintf("ConfigMap %s/%s holds the cluster's labels for every Bundle; the agent's administrator writes it, no Bundle", ref.Namespace, ref.Name)}
	case ref.Group == "" && ref.Kind == "ConfigMap" && strings.HasPrefix(ref.Name, parentPrefix):
		return &ErrReserved{Ref: ref, Reason: fmt.Sprintf("ConfigMap names beginning with %q in %s are the Bundles' ApplySet parents (inventories); no Bundle writes them", parentPrefix, ref.Namespace)}
	case ref.Group == "coordination.k8s.io" && ref.Kind == "Lease" && ref.Name == LeaderLease:
		return &ErrReserved{Ref: ref, Reason: fmt.Sprintf("Lease %s/%s is the agent's leader election; no Bundle writes it", ref.Namespace, ref.Name)}
	}
	return nil
}
