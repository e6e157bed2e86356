// Package guard prevents drift before it lands: it generates, for a
// Bundle in Prevent or Warn mode, a ValidatingAdmissionPolicy and its
// bindings that the API server evaluates in-process (CEL, no webhook to
// run). An update by anyone but the Bundle's acting identity that changes
// a field the Bundle owns — seen in the field manager's own entry of
// managedFields, which the server has already moved when validating
// admission runs — is denied (Prevent) or warned about and audited (Warn),
// with a message that names the Bundle, the fields and how to change them
// through the Bundle. Changes through /scale, which carry no managedFields,
// are compared with the owned replica count by name; deleting an owned
// object can be denied too. Fields in spec.drift.ignore are not guarded,
// and a holder of the "override" verb on the Bundle may write an object
// that carries OverrideAnnotation (break-glass). It is pure: the objects
// are applied by the caller.
package guard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// The resources of the objects a guard is made of.
var (
	PolicyGVR  = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}
	BindingGVR = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"}
)

// OverrideAnnotation marks an object that a holder of the override verb
// changed on purpose (break-glass): the guard lets the write through, the
// agent records it and leaves the object's drift uncorrected while the
// annotation is there. Its value says why.
const OverrideAnnotation = "driftwatch.io/override"

// OverrideVerb is the RBAC verb on bundles.driftwatch.io (the Bundle by
// name) that lets a user write owned fields of objects that carry
// OverrideAnnotation.
const OverrideVerb = "override"

// Spec is what a Bundle's guard protects and from whom.
type Spec struct {
	Bundle types.NamespacedName
	// Warn warns and audits instead of denying (drift.mode: Warn).
	Warn bool
	// FieldManager is the agent's field manager, whose managedFields
	// entry holds what the Bundle owns.
	FieldManager string
	// Exempt are the user names that may change owned fields: the agent's
	// and the account the Bundle acts as. Never field-manager names,
	// which any client may choose.
	Exempt []string
	// Ignore are the Bundle's spec.drift.ignore rules, and those the agent
	// adds (an autoscaler's replicas): not guarded.
	Ignore []manifests.IgnoreRule
	// Scale are the owned objects whose replica count may be changed
	// through /scale, with the count the Bundle owns.
	Scale []ScaleTarget
	// Deletion denies deleting owned objects to others.
	Deletion bool
	// Owner is set as the objects' owner: the Bundle CRD, so that an
	// uninstall that removes it removes them.
	Owner *metav1.OwnerReference
}

// ScaleTarget is an owned object with a scale subresource.
type ScaleTarget struct {
	Resource        schema.GroupResource // apps, deployments
	Namespace, Name string
	Replicas        int64
}

// Name is the name of a Bundle's policy and of its bindings' prefix.
func Name(b types.NamespacedName) string {
	return "driftwatch." + b.Namespace + "." + b.Name
}

// Selector selects the guard objects of every Bundle.
const Selector = ownership.BundleLabel

// Objects returns a Bundle's ValidatingAdmissionPolicy and its bindings:
// one for the Bundle's objects, selected by its ownership label, and one
// for the scale subresources of the objects in Scale, by name (a Scale
// carries no labels to select).
func Objects(s Spec) []*unstructured.Unstructured {
	name := Name(s.Bundle)
	labels := map[string]any{ownership.BundleLabel: ownership.BundleLabelValue(s.Bundle)}
	actions := []any{"Deny"}
	if s.Warn {
		actions = []any{"Warn", "Audit"}
	}
	policy := object(PolicyGVR, "ValidatingAdmissionPolicy", name, labels, s.Owner, map[string]any{
		"failurePolicy": "Ignore", // a policy error never blocks writes; correction stays the second line
		"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
			"apiGroups": []any{"*"}, "apiVersions": []any{"*"}, "resources": []any{"*", "*/scale"},
			"operations": []any{"UPDATE", "DELETE"},
		}}},
		"variables":        variables(s),
		"validations":      validations(s),
		"auditAnnotations": []any{map[string]any{"key": "bundle", "valueExpression": quote(s.Bundle.String())}},
	})
	objects := []*unstructured.Unstructured{policy,
		object(BindingGVR, "ValidatingAdmissionPolicyBinding", name, labels, s.Owner, map[string]any{
			"policyName": name, "validationActions": actions,
			"matchResources": map[string]any{"objectSelector": map[string]any{"matchLabels": labels}},
		})}
	if rules, namespaces := scaleRules(s.Scale); len(rules) > 0 {
		objects = append(objects, object(BindingGVR, "ValidatingAdmissionPolicyBinding", name+".scale", labels, s.Owner, map[string]any{
			"policyName": name, "validationActions": actions,
			"matchResources": map[string]any{
				"namespaceSelector": map[string]any{"matchExpressions": []any{map[string]any{
					"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}}},
				"resourceRules": rules,
			},
		}))
	}
	return objects
}

func object(gvr schema.GroupVersionResource, kind, name string, labels map[string]any, owner *metav1.OwnerReference, spec map[string]any) *unstructured.Unstructured {
	meta := map[string]any{"name": name, "labels": labels}
	if owner != nil {
		meta["ownerReferences"] = []any{map[string]any{"apiVersion": owner.APIVersion, "kind": owner.Kind, "name": owner.Name, "uid": string(owner.UID)}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": kind, "metadata": meta, "spec": spec}}
}

// variables are the CEL variables the validations share: who may write,
// and our entry of managedFields before and after the request.
func variables(s Spec) []any {
	entry := func(obj string) string {
		return fmt.Sprintf("has(%[1]s.metadata.managedFields) ? %[1]s.metadata.managedFields.filter(e, e.manager == %[2]s && e.operation == 'Apply' && !has(e.subresource)) : []", obj, quote(s.FieldManager))
	}
	exempt := make([]string, len(s.Exempt))
	for i, u := range s.Exempt {
		exempt[i] = quote(u)
	}
	override := fmt.Sprintf("object != null && has(object.metadata.annotations) && %s in object.metadata.annotations && "+
		"authorizer.group('driftwatch.io').resource('bundles').namespace(%s).name(%s).check(%s).allowed()",
		quote(OverrideAnnotation), quote(s.Bundle.Namespace), quote(s.Bundle.Name), quote(OverrideVerb))
	return []any{
		// Fields absent from the request are absent, not empty: a request
		// on the main resource has no subResource.
		variable("sub", "has(request.subResource) ? request.subResource : ''"),
		variable("exempt", fmt.Sprintf("request.userInfo.username in [%s]", strings.Join(exempt, ", "))),
		variable("override", override),
		variable("oldOurs", entry("oldObject")),
		variable("newOurs", entry("object")),
		variable("oldF", "variables.oldOurs.size() > 0 && has(variables.oldOurs[0].fieldsV1) ? variables.oldOurs[0].fieldsV1 : {}"),
		variable("newF", "variables.newOurs.size() > 0 && has(variables.newOurs[0].fieldsV1) ? variables.newOurs[0].fieldsV1 : {}"),
		// The owned top-level and second-level fields that changed, for
		// the message only.
		variable("changed", "variables.oldF.filter(k, !(k in variables.newF) || variables.newF[k] != variables.oldF[k])"+
			".map(k, type(variables.oldF[k]) == map && variables.oldF[k].size() > 0 ? "+
			"variables.oldF[k].filter(j, !(k in variables.newF) || type(variables.newF[k]) != map || !(j in variables.newF[k]) || variables.newF[k][j] != variables.oldF[k][j])"+
			".map(j, '.' + k.substring(2) + '.' + (j.size() > 2 ? j.substring(2) : j)).join(', ') : '.' + k.substring(2))"),
	}
}

func variable(name, expr string) map[string]any {
	return map[string]any{"name": name, "expression": expr}
}

// validations are the rules: owned fields unchanged on the main resource,
// the owned replica count through /scale, and (with Deletion) no delete.
func validations(s Spec) []any {
	how := fmt.Sprintf("owned by Bundle %s (driftwatch): change it in the Bundle, or list it in the Bundle's spec.drift.ignore", s.Bundle)
	who := "' (user ' + request.userInfo.username + ')'"
	out := []any{map[string]any{
		"expression": "variables.exempt || variables.override || variables.sub != '' || request.operation != 'UPDATE' || " + unchanged(s.Ignore),
		"messageExpression": "object.kind + ' ' + (has(object.metadata.namespace) ? object.metadata.namespace + '/' : '') + object.metadata.name + ': ' + " +
			"variables.changed.join(', ') + ' ' + " + quote(how) + " + " + who,
		"reason": "Forbidden",
	}}
	if len(s.Scale) > 0 {
		out = append(out, map[string]any{
			"expression": "variables.exempt || variables.sub != 'scale' || !((request.namespace + '/' + request.resource.resource + '/' + request.name) in " + scaleMap(s.Scale) + ") || " +
				"object.spec.replicas == " + scaleMap(s.Scale) + "[request.namespace + '/' + request.resource.resource + '/' + request.name]",
			"messageExpression": "request.resource.resource + ' ' + request.namespace + '/' + request.name + ': .spec.replicas ' + " +
				quote(how) + " + '; it holds ' + string(" + scaleMap(s.Scale) + "[request.namespace + '/' + request.resource.resource + '/' + request.name]) + " + who,
			"reason": "Forbidden",
		})
	}
	if s.Deletion {
		out = append(out, map[string]any{
			"expression": "variables.exempt || request.operation != 'DELETE' || variables.sub != ''",
			"messageExpression": "oldObject.kind + ' ' + (has(oldObject.metadata.namespace) ? oldObject.metadata.namespace + '/' : '') + oldObject.metadata.name + " +
				quote(fmt.Sprintf(" is owned by Bundle %s (driftwatch) and protected from deletion: remove it from the Bundle, or delete the Bundle", s.Bundle)) + " + " + who,
			"reason": "Forbidden",
		})
	}
	return out
}

// scaleMap is a CEL map literal: namespace/resource/name → replicas.
func scaleMap(targets []ScaleTarget) string {
	entries := make([]string, 0, len(targets))
	for _, t := range targets {
		entries = append(entries, fmt.Sprintf("%s: %d", quote(t.Namespace+"/"+t.Resource.Resource+"/"+t.Name), t.Replicas))
	}
	sort.Strings(entries)
	return "{" + strings.Join(entries, ", ") + "}"
}

// scaleRules are the binding's rules for the scale subresources of
// targets, by name, and the namespaces they are in.
func scaleRules(targets []ScaleTarget) ([]any, []any) {
	type key struct{ group, resource string }
	names := map[key][]string{}
	nss := map[string]bool{}
	for _, t := range targets {
		k := key{t.Resource.Group, t.Resource.Resource}
		names[k] = append(names[k], t.Name)
		nss[t.Namespace] = true
	}
	keys := make([]key, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].group+keys[i].resource < keys[j].group+keys[j].resource })
	var rules []any
	for _, k := range keys {
		ns := names[k]
		sort.Strings(ns)
		rules = append(rules, map[string]any{"apiGroups": []any{k.group}, "apiVersions": []any{"*"},
			"resources": []any{k.resource + "/scale"}, "resourceNames": toAny(compact(ns)), "operations": []any{"UPDATE"}})
	}
	namespaces := make([]string, 0, len(nss))
	for ns := range nss {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	return rules, toAny(namespaces)
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// quote is a CEL string literal.
func quote(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a CEL string literal
	return string(b)
}

// Hash digests the objects a guard is made of: equal hashes, nothing to
// write.
func Hash(objs []*unstructured.Unstructured) (string, error) {
	h := sha256.New()
	for _, o := range objs {
		b, err := json.Marshal(o.Object)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}
