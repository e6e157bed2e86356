package helmrun

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/ownership"
)

// Helm's own metadata on a release's objects (setMetadataVisitor), which
// the stamper adds before Helm does so that the stored manifest, what
// Helm applies and what a correction applies are the same object.
const (
	managedByLabel       = "app.kubernetes.io/managed-by"
	releaseNameAnnot     = "meta.helm.sh/release-name"
	releaseNSAnnot       = "meta.helm.sh/release-namespace"
	postrenderFileAnnot  = "postrenderer.helm.sh/postrender-filename"
	resourcePolicyAnnot  = "helm.sh/resource-policy"
	helmManagedByValue   = "Helm"
	sourceCommentPrefix  = "# Source: "
	manifestResourceName = "manifest"
)

// stamper is the post-renderer of a release's templates (not its hooks,
// nor its crds/ directory, which stay Helm's): it prepares every object
// — namespace resolved, ownership labels, hash — exactly as a sync
// prepares it (Options.Prepare), so that Helm's server-side apply and a
// later correction write the same fields as the same manager.
type stamper struct {
	prepare func(*unstructured.Unstructured) (*unstructured.Unstructured, error)
	// owner reads an object's metadata as it is in the cluster (nil: it
	// does not exist), read as the Bundle's account.
	owner              func(*unstructured.Unstructured) (metav1.Object, error)
	release, namespace string
	// maxObjects bounds the objects of a release (--max-bundle-objects):
	// counted here, before Helm applies any of them.
	maxObjects int
}

// Run implements postrenderer.PostRenderer.
func (s *stamper) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	objs, errs := decodeByTemplate(in.String())
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if s.maxObjects > 0 && len(objs) > s.maxObjects {
		return nil, fmt.Errorf("the chart renders %d objects, more than %d; the agent's limit is --max-bundle-objects; nothing was applied", len(objs), s.maxObjects)
	}
	out := &bytes.Buffer{}
	for _, o := range objs {
		obj := o.Object
		ann := obj.GetAnnotations()
		file := ann[postrenderFileAnnot]
		delete(ann, postrenderFileAnnot)
		obj.SetAnnotations(ann)
		setHelmMetadata(obj, s.release, s.namespace)
		if obj.GetAnnotations()[resourcePolicyAnnot] == "keep" {
			// Helm keeps it when it leaves the chart and on uninstall:
			// so does the agent (prune, deletion).
			a := obj.GetAnnotations()
			a[manifests.KeepAnnotation] = "true"
			obj.SetAnnotations(a)
		}
		// An object that cannot be prepared fails the release: left as
		// rendered it would escape targetNamespace, or write what the
		// agent relies on, or carry no ownership.
		p, err := s.prepare(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		obj = p
		if err := s.admit(obj); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		ann = obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		if file != "" {
			ann[postrenderFileAnnot] = file
		}
		obj.SetAnnotations(ann)
		y, err := yaml.Marshal(obj.Object)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out, nil
}

// admit refuses an object that another Bundle owns, as a sync refuses it:
// Helm's takeOwnership (and spec.adopt) take over objects nobody owns,
// never another Bundle's.
func (s *stamper) admit(obj *unstructured.Unstructured) error {
	ours, stamped := obj.GetLabels()[ownership.PartOfLabel]
	if s.owner == nil || !stamped {
		return nil
	}
	existing, err := s.owner(obj)
	if err != nil || existing == nil {
		return err
	}
	// Adoption of what nobody owns is Helm's (takeOwnership) to decide.
	if err := (ownership.Set{ID: ours}).Admit(existing, true); err != nil {
		return fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}

// fileAnnotRE finds the template a post-renderer document came from.
var fileAnnotRE = regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(postrenderFileAnnot) + `:\s*['"]?([^'"\n]+)`)

// decodeByTemplate decodes the post-renderer's stream document by
// document, each under the name of its template, so that an error names
// the template ("web/templates/cm.yaml#1: ConfigMap: metadata.name is
// required").
func decodeByTemplate(stream string) ([]manifests.Object, []error) {
	var objs []manifests.Object
	var errs []error
	seen := map[string]int{}
	for _, doc := range strings.Split("\n"+stream, "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		name := "rendered"
		if m := fileAnnotRE.FindStringSubmatch(doc); m != nil {
			name = strings.TrimSpace(m[1])
		}
		seen[name]++
		o, e := manifests.Decode([]manifests.Resource{{Name: fmt.Sprintf("%s (document %d)", name, seen[name]), Content: doc}})
		if len(e) == 1 && errors.Is(e[0], manifests.ErrEmptyBundle) {
			continue
		}
		objs, errs = append(objs, o...), append(errs, e...)
	}
	return objs, errs
}

// setHelmMetadata adds the label and annotations Helm puts on every
// object of a release.
func setHelmMetadata(obj *unstructured.Unstructured, release, namespace string) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[managedByLabel] = helmManagedByValue
	obj.SetLabels(labels)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[releaseNameAnnot] = release
	ann[releaseNSAnnot] = namespace
	obj.SetAnnotations(ann)
}

// output turns a release's manifest into the render's objects, one
// resource per template file ("# Source: chart/templates/x.yaml"), so
// that each object's source names its template.
func (r *Releases) output(req *request, manifest string, released bool) (manifests.Output, error) {
	resources := splitManifest(manifest)
	out := manifests.Output{Source: manifests.RawSource(resources), Released: released}
	if len(resources) == 0 {
		return out, nil
	}
	out.Objects, out.Errors = manifests.DecodeWithin(resources, req.in.Limits.OrDefault().Bytes)
	if len(out.Objects) == 0 && len(out.Errors) == 1 && errors.Is(out.Errors[0], manifests.ErrEmptyBundle) {
		out.Errors = nil
	}
	return out, nil
}

// splitManifest groups a release manifest's documents by their template.
func splitManifest(manifest string) []manifests.Resource {
	var resources []manifests.Resource
	index := map[string]int{}
	for _, doc := range strings.Split("\n"+manifest, "\n---\n") {
		doc = strings.TrimLeft(doc, "\n")
		if strings.TrimSpace(doc) == "" || strings.TrimSpace(doc) == "---" {
			continue
		}
		doc = strings.TrimPrefix(doc, "---\n")
		name := manifestResourceName
		if rest, ok := strings.CutPrefix(doc, sourceCommentPrefix); ok {
			if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
				name, doc = rest[:nl], rest[nl+1:]
			}
		}
		if strings.TrimSpace(doc) == "" {
			continue
		}
		if !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if i, ok := index[name]; ok {
			resources[i].Content += "---\n" + doc
			continue
		}
		index[name] = len(resources)
		resources = append(resources, manifests.Resource{Name: name, Content: doc})
	}
	return resources
}
