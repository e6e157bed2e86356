package manifests

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// Cluster is the target cluster a Bundle is rendered for: its name and
// labels, which target customisations select on.
type Cluster struct {
	Name   string
	Labels map[string]string
}

// WithLabels returns the cluster with extra labels laid over its own (the
// labels of the driftwatch-cluster ConfigMap over the flags': the agent
// and `driftwatch diff` use the same rule).
func (c Cluster) WithLabels(extra map[string]string) Cluster {
	labels := maps.Clone(c.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, extra)
	return Cluster{Name: c.Name, Labels: labels}
}

// Effective returns the spec that applies on cluster: the Bundle's spec
// with the first target customization that matches the cluster merged in
// (Customized says which, and what it adds). It is a pure function of its
// inputs.
func Effective(spec BundleSpec, cluster Cluster) (BundleSpec, error) {
	if spec.Helm != nil && spec.Kustomize != nil {
		return spec, errors.New("spec: helm and kustomize cannot both be set")
	}
	return customize(spec, cluster)
}

// A Renderer turns the effective spec of one kind of source — raw
// manifests, a Kustomize tree, a Helm chart — into desired objects. It
// returns the objects it could render and one error per document or input
// it could not; an error of its own means nothing could be rendered.
type Renderer interface {
	Render(ctx context.Context, in Input) (Output, error)
}

// Input is what a Renderer renders: one Bundle's effective spec for one
// cluster.
type Input struct {
	Bundle  types.NamespacedName
	Spec    *BundleSpec
	Cluster Cluster
	// Limits are the pipeline's, filled in.
	Limits Limits
	// Access is what the Bundle may do and as whom (Pipeline.Admit):
	// whatever the renderer reads or writes in a cluster, it does as
	// Access.ServiceAccount.
	Access Access
}

// An Uninstaller also removes what it installed when a Bundle is deleted
// (a Helm release).
type Uninstaller interface {
	Uninstall(ctx context.Context, in Input) error
}

// Output is what a Renderer produced.
type Output struct {
	Objects []Object
	Errors  []error
	// Source finds each object again by its Locator.
	Source Source
	// Released says that the render itself wrote the objects (a Helm
	// install or upgrade): what the cache shows of them meanwhile was
	// that write, not drift. Note says what was released, for an event.
	Released bool
	Note     string
}

// Reference names one object of the target cluster that a render reads.
type Reference struct {
	Kind      string // ConfigMap or Secret
	Namespace string
	Name      string
}

// Reads are the objects of the target cluster that rendering spec reads
// (spec.helm.valuesFrom): a change to one of them renders it again.
func (s *BundleSpec) Reads() []Reference {
	if s.Helm == nil {
		return nil
	}
	var out []Reference
	for _, v := range s.Helm.ValuesFrom {
		kind, sel, err := v.Selector()
		if err != nil {
			continue // the render reports it
		}
		ns := sel.Namespace
		if ns == "" {
			ns = s.ReleaseNamespace()
		}
		out = append(out, Reference{Kind: kind, Namespace: ns, Name: sel.Name})
	}
	return out
}

// Source hands out one rendered object again by the Locator the render
// gave it, without rendering the rest: what a correction applies.
type Source interface {
	Object(loc Locator) (*unstructured.Unstructured, error)
}

// Rendered is a Bundle's desired objects for one cluster, and everything a
// later step needs to know about how they were made.
type Rendered struct {
	// Spec is the effective spec for the cluster.
	Spec BundleSpec
	// Objects in the order they are declared. The apply stage takes them
	// (Take) so that a large Bundle's decoded maps do not outlive it.
	Objects []Object
	// Errors, one per document or input that could not be rendered.
	Errors []error
	// Declared counts the objects and the documents that failed.
	Declared int
	// Generation is the Bundle's generation it was rendered from.
	Generation int64
	// Released and Note are the Output's.
	Released bool
	Note     string
	// Access is what the Bundle may do and as whom (Pipeline.Admit).
	Access Access

	source Source
}

// Object returns the object at loc again, as the render produced it.
func (r *Rendered) Object(loc Locator) (*unstructured.Unstructured, error) {
	if r.source == nil {
		return nil, fmt.Errorf("no rendered source")
	}
	return r.source.Object(loc)
}

// Take hands the rendered objects to the caller and forgets them; the
// Rendered keeps only what Object needs.
func (r *Rendered) Take() []Object {
	objs := r.Objects
	r.Objects = nil
	return objs
}

// Pipeline renders Bundles: it computes the effective spec for the
// cluster, then hands it to the renderer of its kind of source. Sync,
// `driftwatch diff` and `driftwatch render` all go through it.
type Pipeline struct {
	// Manifests renders raw manifests; nil means RawManifests{}.
	Manifests Renderer
	// Helm renders Bundles with spec.helm; Kustomize those with
	// spec.kustomize (package manifests/kustomize); nil refuses them.
	Helm, Kustomize Renderer
	// Overlays applies target customizations' yaml overlays to a render
	// (kustomize.Patch); nil refuses them.
	Overlays func(out *Output, resources []Resource, files []string) error
	// Limits bound each Bundle; zero values are DefaultLimits'.
	Limits Limits
	// Admit settles what each Bundle may do and as whom before it is
	// rendered; nil: every Bundle acts as the caller (render, diff).
	Admit Admitter
}

// ErrNoHelm is a Helm Bundle rendered by a pipeline without Helm.
var ErrNoHelm = errors.New("spec.helm: this command does not render Helm charts")

// ErrNoKustomize is a Kustomize Bundle (or a yaml overlay) rendered by a
// pipeline without Kustomize.
var ErrNoKustomize = errors.New("spec.kustomize and yaml overlays are not rendered by this command")

// Render renders b for cluster. A Bundle that cannot be rendered at all
// (its customisation is invalid, its chart cannot be loaded) is an error;
// documents that cannot be decoded are in Rendered.Errors, and the rest is
// rendered.
func (p Pipeline) Render(ctx context.Context, b *Bundle, cluster Cluster) (*Rendered, error) {
	spec, err := Effective(b.Spec, cluster)
	if err != nil {
		return nil, fmt.Errorf("bundle %s/%s: %w", b.Namespace, b.Name, err)
	}
	r := p.renderer(&spec)
	switch {
	case r == nil && spec.Helm != nil:
		return nil, ErrNoHelm
	case r == nil:
		return nil, ErrNoKustomize
	}
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	access, err := p.admit(key, &spec)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", key, err)
	}
	limits := p.Limits.OrDefault()
	if err := checkSize(spec.Resources, limits.Bytes); err != nil {
		return nil, fmt.Errorf("bundle %s/%s: %w", b.Namespace, b.Name, err)
	}
	in := Input{Bundle: key, Spec: &spec, Cluster: cluster, Limits: limits, Access: access}
	out, err := p.render(ctx, r, in)
	if err != nil {
		return nil, fmt.Errorf("bundle %s/%s: %w", b.Namespace, b.Name, err)
	}
	if n := len(out.Objects) + len(out.Errors); n > limits.Objects {
		return nil, fmt.Errorf("bundle %s/%s: it renders %d documents, more than %d; the agent's limit is --max-bundle-objects", b.Namespace, b.Name, n, limits.Objects)
	}
	return &Rendered{
		Spec: spec, Objects: out.Objects, Errors: out.Errors,
		Declared:   len(out.Objects) + len(out.Errors),
		Generation: b.Generation,
		Released:   out.Released, Note: out.Note, Access: access,
		source: out.Source,
	}, nil
}

// render runs r, then what the chosen customization adds: overlays, the
// target namespace's labels. A customization that does not deploy renders
// nothing (and uninstalls a Helm release).
func (p Pipeline) render(ctx context.Context, r Renderer, in Input) (Output, error) {
	c := in.Spec.Customized
	if c.DoNotDeploy {
		if u, ok := r.(Uninstaller); ok {
			if err := u.Uninstall(ctx, in); err != nil {
				return Output{}, err
			}
			// The uninstall deleted the objects: not drift.
			return Output{Source: RawSource(nil), Released: true,
				Note: "doNotDeploy (target customization " + c.Name + "): release uninstalled"}, nil
		}
		return Output{Source: RawSource(nil)}, nil
	}
	all := in.Spec.Resources
	if len(c.Overlays) > 0 {
		// Overlay files are patches, not objects of the Bundle.
		spec := *in.Spec
		spec.Resources = withoutFiles(all, c.Overlays)
		in.Spec = &spec
	}
	out, err := r.Render(ctx, in)
	if err != nil {
		return out, err
	}
	if len(c.Overlays) > 0 {
		if p.Overlays == nil {
			return out, ErrNoKustomize
		}
		if err := p.Overlays(&out, all, c.Overlays); err != nil {
			return out, err
		}
	}
	if len(c.NamespaceLabels)+len(c.NamespaceAnnotations) > 0 {
		if err := addNamespaceMetadata(&out, in.Spec, c); err != nil {
			return out, err
		}
	}
	return out, nil
}

// withoutFiles returns resources without those named.
func withoutFiles(resources []Resource, names []string) []Resource {
	out := make([]Resource, 0, len(resources))
	for _, r := range resources {
		if !slices.Contains(names, r.Name) {
			out = append(out, r)
		}
	}
	return out
}

// renderer is the Renderer of spec's kind of source.
func (p Pipeline) renderer(spec *BundleSpec) Renderer {
	if spec.Helm != nil {
		return p.Helm
	}
	if spec.Kustomize != nil {
		return p.Kustomize
	}
	if p.Manifests == nil {
		return RawManifests{}
	}
	return p.Manifests
}

// Uninstall removes what the renderer of b installed, where it installs
// anything (a Helm release), acting as access says; other Bundles have
// nothing to uninstall.
func (p Pipeline) Uninstall(ctx context.Context, b *Bundle, cluster Cluster, access Access) error {
	spec := p.effectiveForDelete(b, cluster)
	u, ok := p.renderer(&spec).(Uninstaller)
	if !ok {
		return nil
	}
	return u.Uninstall(ctx, Input{Bundle: types.NamespacedName{Namespace: b.Namespace, Name: b.Name}, Spec: &spec, Cluster: cluster, Access: access})
}

// AccessFor is what a Bundle being deleted may do and as whom: what
// Admit says of its effective spec for cluster.
func (p Pipeline) AccessFor(b *Bundle, cluster Cluster) (Access, error) {
	spec := p.effectiveForDelete(b, cluster)
	return p.admit(types.NamespacedName{Namespace: b.Namespace, Name: b.Name}, &spec)
}

// effectiveForDelete is b's effective spec, or its own when a
// customization is invalid: that must not keep a deleted Bundle's release
// installed.
func (p Pipeline) effectiveForDelete(b *Bundle, cluster Cluster) BundleSpec {
	spec, err := Effective(b.Spec, cluster)
	if err != nil {
		return b.Spec
	}
	return spec
}

func (p Pipeline) admit(key types.NamespacedName, spec *BundleSpec) (Access, error) {
	if p.Admit == nil {
		return Access{}, nil
	}
	return p.Admit.Admit(key, spec)
}

// RawManifests renders a Bundle's resources as they are: multi-document
// YAML or JSON files (see Decode).
type RawManifests struct{}

// Render implements Renderer.
func (RawManifests) Render(_ context.Context, in Input) (Output, error) {
	objs, errs := DecodeWithin(in.Spec.Resources, in.Limits.OrDefault().Bytes)
	return Output{Objects: objs, Errors: errs, Source: RawSource(in.Spec.Resources)}, nil
}

// RawSource finds an object again in the Bundle's files, through the span
// of its document (DecodeAt): the files are the spec's own strings, so
// keeping them costs nothing beyond the Bundle itself.
type RawSource []Resource

// Object implements Source.
func (s RawSource) Object(loc Locator) (*unstructured.Unstructured, error) {
	return DecodeAt(s, loc)
}
