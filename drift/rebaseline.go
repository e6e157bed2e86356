package drift

import (
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/driftwatch/driftwatch/apply"
	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/watch"
)

// rebaseline records the applied state of an object that a previous agent
// applied with the same content (a restart): the fields we own now. Fields
// that another manager took while no agent was watching are no longer in
// our entry, so the declared map leaves of the desired object that we do
// not own are added back to the recorded set, and lostWhileDown says that
// the object must be checked. Lists are not descended: their keys need the
// schema, so an item taken inside a list while the agent was down is only
// seen with the object's next change.
func (c *Controller) rebaseline(d apply.Desired, cached *watch.Object) (*apply.Applied, bool) {
	raw, err := apply.OwnedFieldsJSON(cached.ManagedFields(), c.applier.FieldManager())
	if err != nil || raw == "" {
		return nil, false
	}
	base := &apply.Applied{ResourceVersion: cached.ResourceVersion, Fields: raw, Hash: d.Hash}
	owned, err := base.FieldSet()
	if err != nil {
		return nil, false
	}
	obj, err := d.Object()
	if err != nil {
		return base, false
	}
	missing := detect.NotOwned(owned, obj.Object)
	if missing.Empty() {
		return base, false
	}
	c.logger.V(2).Info("Declared fields lost while no agent watched", "object", d.Ref.String(), "fields", missing.String())
	full, err := owned.Union(missing).ToJSON()
	if err != nil {
		return base, false
	}
	base.Fields = string(full)
	base.ResourceVersion = "" // unknown: the next look at the object must check it
	return base, true
}

// withoutLostIgnored drops from the object to apply the ignored fields that
// another manager holds and we do not, so that the apply leaves them to that
// manager instead of taking them back. Ignored fields that we still own are
// sent as declared: omitting them would make the server remove them.
func (c *Controller) withoutLostIgnored(d apply.Desired, ignore []string) apply.Desired {
	if len(ignore) == 0 {
		return d
	}
	cached, ok := c.watches.Get(d.GVR, d.Ref.Namespace, d.Ref.Name)
	if !ok {
		return d
	}
	owned, others, err := apply.FieldsByOwner(cached.ManagedFields(), c.applier.FieldManager())
	if err != nil {
		return d
	}
	// Matched as Detect matches: by the path's string form.
	var drop []fieldpath.Path
	others.Difference(owned).Iterate(func(p fieldpath.Path) {
		if detect.Ignored(p.String(), ignore) {
			drop = append(drop, p.Copy())
		}
	})
	if len(drop) == 0 {
		return d
	}
	obj, err := d.Object()
	if err != nil {
		return d
	}
	for _, p := range drop {
		detect.RemovePath(obj.Object, p)
	}
	if out, err := d.WithObject(obj); err == nil {
		return out
	}
	return d
}
