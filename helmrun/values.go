package helmrun

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/driftwatch/driftwatch/clusters"
	"github.com/driftwatch/driftwatch/manifests"
)

// DefaultValuesKey is the key of a valuesFrom reference that names none.
const DefaultValuesKey = "values.yaml"

// values merges a release's values, each later one winning key by key:
// valuesFiles in order, valuesFrom in order, spec.helm.values, and the
// cluster's identity under global.driftwatch.
func (r *Releases) values(ctx context.Context, in manifests.Input, clients *clusters.Clients) (map[string]any, error) {
	h := in.Spec.Helm
	vals := map[string]any{}
	for _, name := range h.ValuesFiles {
		data, err := resourceNamed(in.Spec.Resources, name)
		if err != nil {
			return nil, err
		}
		v, err := loader.LoadValues(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("values file %s is not YAML: %w", name, err)
		}
		vals = loader.MergeMaps(vals, v)
	}
	for i, v := range h.ValuesFrom {
		kind, ref, err := v.Selector()
		if err != nil {
			return nil, fmt.Errorf("spec.helm.valuesFrom[%d]: %w", i, err)
		}
		if clients == nil {
			// Offline (driftwatch render): an optional reference is
			// absent, as it may be in a cluster; another cannot be read.
			if ref.Optional {
				continue
			}
			return nil, fmt.Errorf("spec.helm.valuesFrom[%d]: %s %s is read from the target cluster: give --kubeconfig (driftwatch diff)", i, kind, ref.Name)
		}
		read, data, err := r.valuesFrom(ctx, clients, kind, ref, in.Spec.ReleaseNamespace())
		if err != nil {
			return nil, fmt.Errorf("spec.helm.valuesFrom[%d]: %w", i, err)
		}
		if data == nil {
			continue
		}
		v, err := loader.LoadValues(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("spec.helm.valuesFrom[%d]: %s %s/%s key %s is not YAML: %w", i, kind, read.Namespace, ref.Name, keyOf(ref), err)
		}
		vals = loader.MergeMaps(vals, v)
	}
	if h.Values != nil {
		vals = loader.MergeMaps(vals, copyMap(h.Values))
	}
	labels := map[string]any{}
	for k, v := range in.Cluster.Labels {
		labels[k] = v
	}
	vals = loader.MergeMaps(vals, map[string]any{"global": map[string]any{"driftwatch": map[string]any{
		"clusterName": in.Cluster.Name, "clusterLabels": labels,
	}}})
	return vals, nil
}

// valuesFrom reads one valuesFrom key; nil data means an optional object
// or key that is absent.
func (r *Releases) valuesFrom(ctx context.Context, clients *clusters.Clients, kind string, ref manifests.KeySelector, releaseNS string) (manifests.Reference, []byte, error) {
	ns := ref.Namespace
	if ns == "" {
		ns = releaseNS
	}
	read := manifests.Reference{Kind: kind, Namespace: ns, Name: ref.Name}
	key := keyOf(ref)
	var data []byte
	var found bool
	var err error
	kube := clients.Kube.CoreV1()
	switch kind {
	case "ConfigMap":
		cm, e := kube.ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err = e; e == nil {
			var s string
			s, found = cm.Data[key]
			data = []byte(s)
		}
	case "Secret":
		sec, e := kube.Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err = e; e == nil {
			data, found = sec.Data[key]
		}
	default:
		return read, nil, fmt.Errorf("kind %q: want ConfigMap or Secret", kind)
	}
	switch {
	case apierrors.IsNotFound(err) && ref.Optional:
		return read, nil, nil
	case apierrors.IsNotFound(err):
		return read, nil, fmt.Errorf("%s %s/%s not found", kind, ns, ref.Name)
	case err != nil:
		return read, nil, fmt.Errorf("%s %s/%s: %w", kind, ns, ref.Name, err)
	case !found && ref.Optional:
		return read, nil, nil
	case !found:
		return read, nil, fmt.Errorf("%s %s/%s has no key %q", kind, ns, ref.Name, key)
	}
	return read, data, nil
}

func keyOf(ref manifests.KeySelector) string {
	if ref.Key == "" {
		return DefaultValuesKey
	}
	return ref.Key
}

// resourceNamed returns the content of the Bundle's resource name.
func resourceNamed(resources []manifests.Resource, name string) ([]byte, error) {
	for _, res := range resources {
		if path.Clean(res.Name) == path.Clean(name) {
			data, err := manifests.ResourceBytes(res)
			if err != nil {
				return nil, fmt.Errorf("values file %s: %w", name, err)
			}
			return data, nil
		}
	}
	return nil, fmt.Errorf("values file %s: no such resource in the bundle", name)
}

// copyMap deep-copies values, which Helm's merge changes in place.
func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = copyMap(sub)
		}
		out[k] = v
	}
	return out
}

// fileInfo is the os.FileInfo of a chart file held in memory, for
// .helmignore rules (which look only at the name and IsDir).
type fileInfo string

func (f fileInfo) Name() string       { return path.Base(string(f)) }
func (f fileInfo) Size() int64        { return 0 }
func (f fileInfo) Mode() fs.FileMode  { return 0o644 }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return false }
func (f fileInfo) Sys() any           { return nil }

var _ os.FileInfo = fileInfo("")
