// Package tenancy decides what a Bundle may do and as whom: the
// ServiceAccount it acts as — always of the Bundle's own namespace, never
// the agent's own — and the rules its namespace's BundleRestrictions set.
// It is pure: the restrictions come from a lister (an informer cache in the
// agent), and a decision makes no API call.
package tenancy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"

	"github.com/driftwatch/driftwatch/manifests"
)

// RestrictionLister lists the BundleRestrictions of one namespace.
type RestrictionLister interface {
	Restrictions(namespace string) ([]manifests.BundleRestriction, error)
}

// Policy admits Bundles. Its zero value admits every Bundle as the agent.
type Policy struct {
	// AgentNamespace is the agent's own namespace: its Bundles are the
	// platform administrator's; Bundles of other namespaces may not target
	// it.
	AgentNamespace string
	// DefaultServiceAccount is the account of Bundles that name none and
	// whose restrictions name no default (--default-service-account): with
	// it set, no Bundle acts as the agent (Flux's multi-tenancy lockdown).
	DefaultServiceAccount string
	// AgentUser is the user name the agent authenticates as in the target
	// cluster; a Bundle naming the ServiceAccount behind it is refused.
	AgentUser string
	// Restrictions lists a namespace's BundleRestrictions; nil: none.
	Restrictions RestrictionLister
}

var _ manifests.Admitter = (*Policy)(nil)

// Admit settles the Access of a Bundle with this effective spec, or
// returns a *manifests.Refused that names the rule it breaks.
func (p *Policy) Admit(bundle types.NamespacedName, spec *manifests.BundleSpec) (manifests.Access, error) {
	var rs []manifests.BundleRestriction
	if p.Restrictions != nil {
		var err error
		if rs, err = p.Restrictions.Restrictions(bundle.Namespace); err != nil {
			return manifests.Access{}, &manifests.Refused{Rule: "BundleRestrictions of namespace " + bundle.Namespace,
				Message: fmt.Sprintf("they cannot be read (%v); nothing is applied until they can", err)}
		}
	}
	slices.SortFunc(rs, func(a, b manifests.BundleRestriction) int { return strings.Compare(a.Name, b.Name) })

	name, from, err := p.accountName(spec, rs)
	if err != nil {
		return manifests.Access{}, err
	}
	var access manifests.Access
	if name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			// A name with a colon would make another user name to impersonate.
			return manifests.Access{}, &manifests.Refused{Rule: from,
				Message: fmt.Sprintf("%q is not a ServiceAccount name: %s", name, strings.Join(errs, "; "))}
		}
		access.ServiceAccount = types.NamespacedName{Namespace: bundle.Namespace, Name: name}
		if p.AgentUser != "" && serviceaccount.MakeUsername(bundle.Namespace, name) == p.AgentUser {
			return manifests.Access{}, &manifests.Refused{Rule: from,
				Message: fmt.Sprintf("ServiceAccount %s is the agent's own account; a Bundle never acts as the agent by naming it", access.ServiceAccount)}
		}
	}
	if bundle.Namespace != p.AgentNamespace && p.AgentNamespace != "" && spec.TargetNamespace == p.AgentNamespace {
		return manifests.Access{}, &manifests.Refused{Rule: "the agent's namespace",
			Message: fmt.Sprintf("targetNamespace %q is the agent's own namespace; only Bundles that live there may write to it", spec.TargetNamespace)}
	}
	for i := range rs {
		if err := check(&rs[i], name, spec); err != nil {
			return manifests.Access{}, err
		}
	}
	access.AllowInsecure = len(rs) > 0
	for _, r := range rs {
		access.AllowInsecure = access.AllowInsecure && r.Spec.AllowInsecureRepositories
	}
	if plain := plainCredentials(spec); plain != "" && !access.AllowInsecure {
		return manifests.Access{}, &manifests.Refused{Rule: "spec.helm.credentialsSecret",
			Message: fmt.Sprintf("the credentials would be sent over plain HTTP (%s); a BundleRestriction of namespace %s with allowInsecureRepositories allows it", plain, bundle.Namespace)}
	}
	return access, nil
}

// accountName is the ServiceAccount name a Bundle acts as and where it
// came from: its own, else its restrictions' default, else the agent's
// default; "" is the agent itself.
func (p *Policy) accountName(spec *manifests.BundleSpec, rs []manifests.BundleRestriction) (string, string, error) {
	if spec.ServiceAccountName != "" {
		return spec.ServiceAccountName, "spec.serviceAccountName", nil
	}
	var name, from string
	for _, r := range rs {
		d := r.Spec.DefaultServiceAccount
		switch {
		case d == "":
		case name == "":
			name, from = d, ruleName(&r)+": defaultServiceAccount"
		case d != name:
			return "", "", &manifests.Refused{Rule: ruleName(&r) + ": defaultServiceAccount",
				Message: fmt.Sprintf("%q disagrees with %s (%q); set spec.serviceAccountName or make them agree", d, from, name)}
		}
	}
	if name != "" {
		return name, from, nil
	}
	return p.DefaultServiceAccount, "--default-service-account", nil
}

func ruleName(r *manifests.BundleRestriction) string {
	return "BundleRestriction " + r.Namespace + "/" + r.Name
}

// check tests a Bundle acting as account name against one restriction.
func check(r *manifests.BundleRestriction, name string, spec *manifests.BundleSpec) error {
	rule := ruleName(r)
	if allowed := r.Spec.AllowedServiceAccounts; len(allowed) > 0 {
		if name == "" {
			return &manifests.Refused{Rule: rule + ": allowedServiceAccounts",
				Message: fmt.Sprintf("the Bundle names no serviceAccountName and would act as the agent itself; allowed: %s", strings.Join(allowed, ", "))}
		}
		ok, err := globAny(allowed, name)
		if err != nil {
			return &manifests.Refused{Rule: rule + ": allowedServiceAccounts", Message: err.Error()}
		}
		if !ok {
			return &manifests.Refused{Rule: rule + ": allowedServiceAccounts",
				Message: fmt.Sprintf("ServiceAccount %q is not allowed; allowed: %s", name, strings.Join(allowed, ", "))}
		}
	}
	if allowed := r.Spec.AllowedTargetNamespaces; len(allowed) > 0 {
		if spec.TargetNamespace == "" {
			return &manifests.Refused{Rule: rule + ": allowedTargetNamespaces",
				Message: fmt.Sprintf("the Bundle must set a targetNamespace, one of %s", strings.Join(allowed, ", "))}
		}
		ok, err := globAny(allowed, spec.TargetNamespace)
		if err != nil {
			return &manifests.Refused{Rule: rule + ": allowedTargetNamespaces", Message: err.Error()}
		}
		if !ok {
			return &manifests.Refused{Rule: rule + ": allowedTargetNamespaces",
				Message: fmt.Sprintf("targetNamespace %q is not allowed; allowed: %s", spec.TargetNamespace, strings.Join(allowed, ", "))}
		}
	}
	if allowed := r.Spec.AllowedRepoPatterns; len(allowed) > 0 {
		if src := chartSource(spec); src != "" {
			ok, err := regexpAny(allowed, src)
			if err != nil {
				return &manifests.Refused{Rule: rule + ": allowedRepoPatterns", Message: err.Error()}
			}
			if !ok {
				return &manifests.Refused{Rule: rule + ": allowedRepoPatterns",
					Message: fmt.Sprintf("chart source %q matches none of %s", src, strings.Join(allowed, ", "))}
			}
		}
	}
	return nil
}

// chartSource is where a Helm Bundle's chart comes from outside the
// Bundle: its repo, or an oci:// chart; "" for a chart among its files.
func chartSource(spec *manifests.BundleSpec) string {
	switch h := spec.Helm; {
	case h == nil:
		return ""
	case h.Repo != "":
		return h.Repo
	case strings.HasPrefix(h.Chart, "oci://"):
		return h.Chart
	}
	return ""
}

// plainCredentials says where a Bundle's repository credentials would
// travel over plain HTTP; "" when they would not.
func plainCredentials(spec *manifests.BundleSpec) string {
	h := spec.Helm
	if h == nil || h.CredentialsSecret == "" {
		return ""
	}
	src := chartSource(spec)
	switch {
	case strings.HasPrefix(strings.ToLower(src), "http://"):
		return src
	case strings.HasPrefix(src, "oci://") && h.Insecure:
		return src + " with insecure: true"
	}
	return ""
}

// globAny reports whether s matches one of patterns (path.Match).
func globAny(patterns []string, s string) (bool, error) { return matchAny(patterns, s, path.Match) }

// regexpAny reports whether s matches one of patterns, regular
// expressions anchored at both ends.
func regexpAny(patterns []string, s string) (bool, error) {
	return matchAny(patterns, s, func(pat, s string) (bool, error) {
		re, err := regexp.Compile("^(?:" + pat + ")$")
		return err == nil && re.MatchString(s), err
	})
}

func matchAny(patterns []string, s string, match func(pattern, s string) (bool, error)) (bool, error) {
	for _, pat := range patterns {
		ok, err := match(pat, s)
		if err != nil {
			return false, fmt.Errorf("pattern %q: %w", pat, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}
