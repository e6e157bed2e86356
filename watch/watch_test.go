package watch

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

func TestCompactKeepsWhatDriftNeeds(t *testing.T) {
	now := metav1.Now()
	in := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "a", Namespace: "n", UID: "u", ResourceVersion: "7", Generation: 2,
			Labels: map[string]string{"driftwatch.io/bundle": "n.b"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": "{...a large document...}",
				"driftwatch.io/applied-hash":                       "abc",
			},
			OwnerReferences:   []metav1.OwnerReference{{Name: "rs"}},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "driftwatch", Time: &now}},
			Finalizers:        []string{"f"},
			DeletionTimestamp: &now,
		},
	}
	out, err := newTables().Compact(in)
	if err != nil {
		t.Fatal(err)
	}
	o := out.(*Object)
	if o.Name != "a" || o.Namespace != "n" || o.UID != "u" || o.ResourceVersion != "7" || o.Generation != 2 ||
		o.Labels()["driftwatch.io/bundle"] != "n.b" || len(o.OwnerReferences) != 1 || len(o.ManagedFields()) != 1 ||
		o.ManagedFields()[0].Manager != "driftwatch" || !o.Deleting {
		t.Errorf("Compact lost what drift detection needs: %+v", o)
	}
	if o.ManagedFields()[0].Time != nil {
		t.Errorf("managedFields time kept: %v", o.ManagedFields()[0].Time)
	}
	if len(o.Annotations) != 1 || o.Annotation("driftwatch.io/applied-hash") != "abc" {
		t.Errorf("annotations = %v, want only driftwatch's", o.Annotations)
	}
	m := o.Meta()
	if m.Name != "a" || m.Namespace != "n" || m.Annotations["driftwatch.io/applied-hash"] != "abc" ||
		m.DeletionTimestamp == nil || m.Labels["driftwatch.io/bundle"] != "n.b" {
		t.Errorf("Meta() = %+v", m)
	}
	key, err := cache.MetaNamespaceKeyFunc(o)
	if err != nil || key != "n/a" {
		t.Errorf("informer key = %q, %v; want n/a", key, err)
	}
	if other, err := newTables().Compact("not an object"); err != nil || other != "not an object" {
		t.Errorf("Compact of another type: %v, %v", other, err)
	}
}

func TestCompactSharesLabelSets(t *testing.T) {
	tab := newTables()
	a, _ := tab.Compact(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "a",
		Labels: map[string]string{"x": "1", "y": "2"}}})
	b, _ := tab.Compact(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "b",
		Labels: map[string]string{"y": "2", "x": "1"}}})
	c, _ := tab.Compact(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "c",
		Labels: map[string]string{"x": "12"}}})
	// Ambiguity check: {"x": "1", "y": "2"} must not collide with a set
	// whose concatenation is the same.
	d, _ := tab.Compact(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "d",
		Labels: map[string]string{"x1y": "2"}}})
	oa, ob, oc, od := a.(*Object), b.(*Object), c.(*Object), d.(*Object)
	if oa.labels != ob.labels {
		t.Error("equal label sets are not shared")
	}
	if oa.labels == oc.labels || oa.labels == od.labels {
		t.Error("different label sets are shared")
	}
	if got := tab.labelSets.len(); got != 3 {
		t.Errorf("table holds %d sets, want 3", got)
	}
	// Once no object holds a set, the table lets it go.
	runtime.KeepAlive(oa)
	runtime.KeepAlive(ob)
	runtime.KeepAlive(oc)
	runtime.KeepAlive(od)
	oa, ob, oc, od, a, b, c, d = nil, nil, nil, nil, nil, nil, nil, nil
	for range 20 {
		runtime.GC()
		if tab.labelSets.len() == 0 {
			return
		}
		runtime.Gosched()
	}
	t.Errorf("table still holds %d sets after their objects were collected", tab.labelSets.len())
}

// serverObject is what the API server sends for one owned ConfigMap: the
// metadata of a driftwatch apply, with its managedFields entry.
func serverObject(i int) []byte {
	return fmt.Appendf(nil, `{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":{
"name":"cm-%05d","namespace":"bench","uid":"4f6a1c2e-0b7d-4c55-9a3e-%012d","resourceVersion":"%d",
"creationTimestamp":"2026-11-23T09:00:00Z",
"labels":{"applyset.kubernetes.io/part-of":"applyset-Zm9vYmFyYmF6cXV4cXV1eHh5enp5eXh4dzIwMjY-v1","driftwatch.io/bundle":"bench.b%02d"},
"annotations":{"driftwatch.io/applied-hash":"%032x","driftwatch.io/bundle":"bench/b%02d"},
"managedFields":[{"manager":"driftwatch","operation":"Apply","apiVersion":"v1","time":"2026-11-23T09:00:00Z",
"fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:key":{}},"f:metadata":{"f:annotations":{"f:driftwatch.io/applied-hash":{},"f:driftwatch.io/bundle":{}},
"f:labels":{"f:applyset.kubernetes.io/part-of":{},"f:driftwatch.io/bundle":{}}}}}]}}`,
		i, i, 1000+i, i/1000, i*7919, i/1000)
}

// cacheBytes fills a store as an informer would, with n decoded objects
// passed through transform (nil: stored as decoded), and returns the heap
// it holds per object.
func cacheBytes(tb testing.TB, n int, transform cache.TransformFunc) float64 {
	docs := make([][]byte, n)
	for i := range docs {
		docs[i] = serverObject(i)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	store := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
	for _, doc := range docs {
		obj := &metav1.PartialObjectMetadata{}
		if err := json.Unmarshal(doc, obj); err != nil {
			tb.Fatal(err)
		}
		var stored any = obj
		if transform != nil {
			var err error
			if stored, err = transform(obj); err != nil {
				tb.Fatal(err)
			}
		}
		if err := store.Add(stored); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(store.ListKeys()) != n {
		tb.Fatalf("store holds %d objects, want %d", len(store.ListKeys()), n)
	}
	runtime.KeepAlive(store)
	runtime.KeepAlive(docs) // freed before the second reading, they would be counted against the cache
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkCacheBytesPerObject prints the heap per cached object for the
// stock PartialObjectMetadata and the compact Object, measured in the same
// run, and their ratio (compact/stock; 0.26 on 2026-11-23). A size is a
// benchmark's figure, not a unit test's assertion: run
// go test ./watch -run '^$' -bench CacheBytes.
func BenchmarkCacheBytesPerObject(b *testing.B) {
	const n = 10000
	var stock float64
	for _, tc := range []struct {
		name      string
		transform cache.TransformFunc
	}{{"stock", nil}, {"compact", newTables().Compact}} {
		b.Run(tc.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = cacheBytes(b, n, tc.transform)
			}
			b.ReportMetric(per, "B/object")
			if tc.transform == nil {
				stock = per
			} else if stock > 0 {
				b.ReportMetric(per/stock, "×stock")
			}
		})
	}
}

// TestSecretsAreWatchedAsMetadataOnly: the informers hold no Secret's
// data — only metadata, managedFields among it (field names, never
// values) — so that the agent's caches never hold a Secret whole.
func TestSecretsAreWatchedAsMetadataOnly(t *testing.T) {
	for _, gvr := range []schema.GroupVersionResource{{Version: "v1", Resource: "secrets"}, {Version: "v1", Resource: "configmaps"}} {
		if NeedsStatus(gvr) {
			t.Errorf("%s would be watched whole", gvr.Resource)
		}
	}
}
