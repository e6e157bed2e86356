package ownership

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/manifests"
)

// InventoryKey is the parent's binaryData key that lists the set's
// objects, one "group/kind/namespace/name" a line, gzip-compressed.
const InventoryKey = "objects.gz"

// maxInventoryBytes bounds an inventory read from a parent, decompressed.
const maxInventoryBytes = 64 << 20

// Inventory is what a Bundle owns in the target cluster, as its ApplySet
// parent records it: every object it applied or is about to apply, and
// those whose deletion failed and is retried. It is what a prune may
// delete — never an object only because it carries the set's labels,
// which anyone who may patch it can set.
type Inventory struct {
	objects map[manifests.ObjectRef]bool
	// Recorded says that the inventory lists objects: a parent written
	// before inventories were kept lists only kinds and namespaces, and
	// nothing of it may then be pruned.
	Recorded bool
}

// NewInventory returns an inventory that records refs.
func NewInventory(refs ...manifests.ObjectRef) Inventory {
	inv := Inventory{objects: map[manifests.ObjectRef]bool{}, Recorded: true}
	for _, r := range refs {
		inv.objects[r] = true
	}
	return inv
}

// Has reports whether the inventory lists ref.
func (inv Inventory) Has(ref manifests.ObjectRef) bool { return inv.objects[ref] }

// Len is the number of objects listed.
func (inv Inventory) Len() int { return len(inv.objects) }

// Objects lists the objects, in no particular order.
func (inv Inventory) Objects() []manifests.ObjectRef { return slices.Collect(maps.Keys(inv.objects)) }

// Covers reports whether the inventory is recorded and lists every one of
// refs: a sync that declares nothing new need not write it.
func (inv Inventory) Covers(refs []manifests.ObjectRef) bool {
	if !inv.Recorded {
		return false
	}
	for _, r := range refs {
		if !inv.objects[r] {
			return false
		}
	}
	return true
}

// With returns the inventory with refs added.
func (inv Inventory) With(refs ...manifests.ObjectRef) Inventory {
	out := NewInventory(refs...)
	for r := range inv.objects {
		out.objects[r] = true
	}
	return out
}

// Equal reports whether both list the same objects.
func (inv Inventory) Equal(other Inventory) bool {
	return inv.Recorded == other.Recorded && maps.Equal(inv.objects, other.objects)
}

// kindsAndNamespaces are the group-kinds and the namespaces of the objects.
func (inv Inventory) kindsAndNamespaces() ([]schema.GroupKind, []string) {
	var kinds []schema.GroupKind
	var nss []string
	for r := range inv.objects {
		kinds = append(kinds, r.GroupKind())
		nss = append(nss, r.Namespace)
	}
	return kinds, nss
}

// Kinds are the group-kinds of the objects.
func (inv Inventory) Kinds() []schema.GroupKind {
	kinds, _ := inv.kindsAndNamespaces()
	return kinds
}

func line(r manifests.ObjectRef) string {
	return r.Group + "/" + r.Kind + "/" + r.Namespace + "/" + r.Name
}

// ParentOf returns the set's parent ConfigMap recording inv: the
// group-kinds and namespaces KEP-3659 asks for, and every object.
func (s Set) ParentOf(inv Inventory) (*unstructured.Unstructured, error) {
	kinds, nss := inv.kindsAndNamespaces()
	parent := s.Parent(kinds, nss)
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(inv.objects))
	for r := range inv.objects {
		lines = append(lines, line(r))
	}
	slices.Sort(lines) // the same inventory, the same parent
	for _, l := range lines {
		fmt.Fprintln(zw, l)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	// binaryData is base64 in JSON; unstructured holds the string.
	parent.Object["binaryData"] = map[string]any{InventoryKey: base64.StdEncoding.EncodeToString(buf.Bytes())}
	return parent, nil
}

// InventoryOf reads the inventory a parent records; a parent without one
// (written before inventories were kept) gives an inventory that is not
// Recorded.
func InventoryOf(parent *unstructured.Unstructured) (Inventory, error) {
	if parent == nil {
		return NewInventory(), nil
	}
	enc, found, err := unstructured.NestedString(parent.Object, "binaryData", InventoryKey)
	if err != nil {
		return Inventory{}, fmt.Errorf("parent %s/%s: %s: %w", parent.GetNamespace(), parent.GetName(), InventoryKey, err)
	}
	if !found {
		return Inventory{objects: map[manifests.ObjectRef]bool{}}, nil
	}
	gz, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return Inventory{}, fmt.Errorf("parent %s/%s: %s: %w", parent.GetNamespace(), parent.GetName(), InventoryKey, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return Inventory{}, fmt.Errorf("parent %s/%s: %s: %w", parent.GetNamespace(), parent.GetName(), InventoryKey, err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxInventoryBytes+1))
	if err != nil || len(data) > maxInventoryBytes {
		return Inventory{}, fmt.Errorf("parent %s/%s: %s: unreadable or larger than %d bytes: %v", parent.GetNamespace(), parent.GetName(), InventoryKey, maxInventoryBytes, err)
	}
	inv := NewInventory()
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" {
			continue
		}
		parts := strings.SplitN(l, "/", 4)
		if len(parts) != 4 || parts[1] == "" || parts[3] == "" {
			return Inventory{}, fmt.Errorf("parent %s/%s: %s: malformed line %q", parent.GetNamespace(), parent.GetName(), InventoryKey, l)
		}
		inv.objects[manifests.ObjectRef{Group: parts[0], Kind: parts[1], Namespace: parts[2], Name: parts[3]}] = true
	}
	return inv, nil
}
