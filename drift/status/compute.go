package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/drift/detect"
	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

// Input is a copy of a Bundle's state, taken under its lock, with each
// object's readiness read from the caches afterwards: everything Compute
// needs.
type Input struct {
	Generation               int64
	Declared, RenderFailures int
	Paused, DetectOnly       bool
	AnyApplied               bool
	Corrections              int64
	LastApplied, LastDrift   time.Time
	BundleErrors             []string
	Refused                  string
	// Customization is the target customization chosen; Waiting, the
	// dependencies a Bundle waits for.
	Customization, Waiting string
	Problems               map[manifests.ObjectRef]Problem
	Drifted                map[manifests.ObjectRef]detect.Finding
	Fights                 []Fight
	Crashes                []PodCrash
	Objects                []Object // every desired object
	// Guard is the drift mode whose admission policy guards the Bundle
	// (Prevent, Warn; "" for none); GuardWritten says the policy is in
	// place, GuardError why it is not.
	Guard        manifests.DriftMode
	GuardWritten bool
	GuardError   string
	// Autoscaled are the owned objects whose .spec.replicas an autoscaler
	// holds, as "Kind/namespace/name (HorizontalPodAutoscaler name)".
	Autoscaled []string
}

// Problem is an object that failed to apply or is in conflict.
type Problem struct {
	State   manifests.ResourceState
	Manager string
	Message string
}

// FightKey is one field of one object taken by one manager.
type FightKey struct {
	Ref     manifests.ObjectRef
	Field   string
	Manager string
}

// Backoff is where the corrections of a fight stand: paused for Pause
// until Until; Last is the latest take that was part of the fight (one
// that made it or came while corrections backed off). The fight ends, and
// the Bundle stops being Stalled, once it has been quiet for Pause.
type Backoff struct {
	Pause       time.Duration
	Until, Last time.Time
}

// Active reports whether the fight goes on at now: corrections back off,
// or the last take is less than a back-off ago.
func (b Backoff) Active(now time.Time) bool {
	return b.Pause > 0 && (now.Before(b.Until) || now.Before(b.Last.Add(b.Pause)))
}

// Fight is a fight's key and its back-off.
type Fight struct {
	FightKey
	Backoff
}

// PodCrash is a crash of one Pod behind an owned object, while it lasts.
type PodCrash struct {
	Owner manifests.ObjectRef
	Pod   string
	Crash Crash
}

// Object is one desired object.
type Object struct {
	Ref        manifests.ObjectRef
	APIVersion string
	GVR        schema.GroupVersionResource
	Applied    bool
	Readiness  *watch.Readiness // nil: ready
}

// Compute is a Bundle's status: a pure function of the state, the
// previous status (for the conditions' transition times) and the time.
// An unchanged state gives an equal status, so nothing is written.
func Compute(in Input, prev manifests.BundleStatus, now time.Time) manifests.BundleStatus {
	st := manifests.BundleStatus{
		ObservedGeneration: in.Generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		DriftCorrections:   in.Corrections,
		Customization:      in.Customization,
		LastAppliedTime:    prev.LastAppliedTime,
		LastDriftTime:      prev.LastDriftTime,
	}
	if !in.LastApplied.IsZero() {
		t := metav1.NewTime(in.LastApplied.Truncate(time.Second))
		st.LastAppliedTime = &t
	}
	if !in.LastDrift.IsZero() {
		t := metav1.NewTime(in.LastDrift.Truncate(time.Second))
		st.LastDriftTime = &t
	}
	fighting := activeFights(in.Fights, now)
	items, sum := resourceItems(in, fighting)
	if len(items) > manifests.MaxStatusResources {
		items = items[:manifests.MaxStatusResources]
	}
	st.Resources, st.Summary = items, sum
	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		// SetStatusCondition keeps the transition time of an unchanged
		// status.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason,
			Message: truncate(msg, 1024), ObservedGeneration: in.Generation, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))})
	}
	errs := syncedCondition(in, items, sum, set)
	driftedCondition(in, items, sum, set)
	stalledCondition(fighting, set)
	readyCondition(in, st.Conditions, items, sum, len(errs) == 0, set)
	if in.Guard == "" {
		meta.RemoveStatusCondition(&st.Conditions, manifests.ConditionGuarded)
	} else {
		guardedCondition(in, set)
	}
	return st
}

// guardedCondition sets Guarded for a Bundle in Prevent or Warn mode.
func guardedCondition(in Input, set setCondition) {
	switch {
	case in.GuardError != "":
		set(manifests.ConditionGuarded, false, "PolicyUnavailable",
			"the admission policy is not in place, drift is still corrected: "+in.GuardError)
	case !in.GuardWritten:
		set(manifests.ConditionGuarded, false, "Pending", "the admission policy is written after the first sync")
	case in.Guard == manifests.DriftWarn:
		set(manifests.ConditionGuarded, true, "Warning",
			"writes by others to owned fields are warned about and audited (mode Warn), and corrected")
	default:
		set(manifests.ConditionGuarded, true, "Preventing",
			"writes by others to owned fields are denied at admission (mode Prevent); what gets through is corrected")
	}
}

// setCondition sets one condition of the status being computed.
type setCondition func(t string, ok bool, reason, msg string)

// activeFights returns, per object, the message of a fight that goes on:
// corrections back off, or it has not been quiet for a back-off yet.
func activeFights(fights []Fight, now time.Time) map[manifests.ObjectRef]string {
	out := map[manifests.ObjectRef]string{}
	for _, f := range fights {
		if f.Active(now) {
			k := f.FightKey
			out[k.Ref] = fmt.Sprintf("%s: %s is taken again and again by %s; corrections back off %s. To let %s own it, add to spec.drift.ignore: %s",
				k.Ref, k.Field, k.Manager, f.Pause, k.Manager, detect.IgnoreSuggestion(k.Ref, k.Field))
		}
	}
	return out
}

// resourceItems lists the objects that need attention, sorted, and counts
// every object by state.
func resourceItems(in Input, fighting map[manifests.ObjectRef]string) ([]manifests.ResourceStatus, manifests.Summary) {
	apiVersions := make(map[manifests.ObjectRef]string, len(in.Objects))
	for _, o := range in.Objects {
		apiVersions[o.Ref] = o.APIVersion
	}
	var items []manifests.ResourceStatus
	add := func(ref manifests.ObjectRef, rs manifests.ResourceStatus) {
		rs.Kind, rs.Namespace, rs.Name = ref.Kind, ref.Namespace, ref.Name
		if rs.APIVersion = apiVersions[ref]; rs.APIVersion == "" {
			rs.APIVersion = ref.Group
		}
		items = append(items, rs)
	}
	sum := manifests.Summary{Desired: in.Declared, Failed: in.RenderFailures}
	for ref, p := range in.Problems {
		if p.State == manifests.StateConflict {
			sum.Conflicts++
		} else {
			sum.Failed++
		}
		add(ref, manifests.ResourceStatus{State: p.State, ChangedBy: p.Manager, Message: p.Message})
	}
	for ref, f := range in.Drifted {
		if _, isProblem := in.Problems[ref]; isProblem {
			continue
		}
		state := manifests.StateDrifted
		if f.Cause == detect.CauseDeleted {
			state = manifests.StateMissing
			sum.Missing++
		} else {
			sum.Drifted++
		}
		msg := "changed by " + f.ChangedBy()
		if m, ok := fighting[ref]; ok {
			msg = m
		}
		add(ref, manifests.ResourceStatus{State: state, Fields: f.Fields, ChangedBy: f.ChangedBy(), Message: msg})
	}
	objectItems(in, add, &sum)
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	return items, sum
}

// objectItems counts the objects without a problem or drift as ready or
// not, and adds those not ready (not applied yet, a crashing Pod, kstatus
// says not Current) with what they wait for.
func objectItems(in Input, add func(manifests.ObjectRef, manifests.ResourceStatus), sum *manifests.Summary) {
	crashed := map[manifests.ObjectRef]PodCrash{}
	for _, c := range in.Crashes {
		crashed[c.Owner] = c
	}
	for _, o := range in.Objects {
		if _, p := in.Problems[o.Ref]; p {
			continue
		}
		if _, d := in.Drifted[o.Ref]; d {
			continue
		}
		c, crashing := crashed[o.Ref]
		switch {
		case !o.Applied:
			sum.NotReady++
		case crashing:
			sum.NotReady++
			add(o.Ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: fmt.Sprintf("pod %s %s", c.Pod, c.Crash)})
		case !o.Readiness.Ready():
			sum.NotReady++
			msg := o.Readiness.Status
			if o.Readiness.Message != "" {
				msg += ": " + o.Readiness.Message
			}
			add(o.Ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: msg})
		default:
			sum.Ready++
		}
	}
}

// syncedCondition sets Synced and returns the errors it reports.
func syncedCondition(in Input, items []manifests.ResourceStatus, sum manifests.Summary, set setCondition) []string {
	errs := append([]string(nil), in.BundleErrors...)
	for _, it := range items {
		if it.State == manifests.StateFailed || it.State == manifests.StateConflict {
			errs = append(errs, it.Message)
		}
	}
	switch {
	case in.Refused != "":
		set(manifests.ConditionSynced, false, "Refused", in.Refused)
	case in.Waiting != "":
		set(manifests.ConditionSynced, false, "DependencyNotReady", in.Waiting)
	case len(errs) > 0:
		reason := "ApplyFailed"
		if sum.Conflicts > 0 && sum.Failed == 0 && len(in.BundleErrors) == 0 {
			reason = "Conflict"
		}
		set(manifests.ConditionSynced, false, reason, strings.Join(errs, "; "))
	case in.Paused:
		set(manifests.ConditionSynced, false, "Paused", "spec.paused is set: changes are not applied")
	default:
		msg := fmt.Sprintf("%d objects applied", sum.Ready+sum.Drifted+sum.Missing)
		if len(in.Autoscaled) > 0 {
			msg += "; .spec.replicas left to the autoscaler of " + strings.Join(in.Autoscaled, ", ")
		}
		set(manifests.ConditionSynced, true, "Applied", msg)
	}
	return errs
}

// driftedCondition sets Drifted.
func driftedCondition(in Input, items []manifests.ResourceStatus, sum manifests.Summary, set setCondition) {
	if sum.Drifted+sum.Missing == 0 {
		set(manifests.ConditionDrifted, false, "InSync", "every owned field holds what was applied")
		return
	}
	var parts []string
	for _, it := range items {
		if it.State == manifests.StateDrifted || it.State == manifests.StateMissing {
			parts = append(parts, fmt.Sprintf("%s/%s %s: %s by %s", it.Kind, it.Name, it.State, strings.Join(it.Fields, ","), it.ChangedBy))
		}
	}
	reason := "DriftDetected"
	if in.DetectOnly {
		reason = "DriftDetectedNotCorrected"
	}
	set(manifests.ConditionDrifted, true, reason, strings.Join(parts, "; "))
}

// stalledCondition sets Stalled while a fight backs off.
func stalledCondition(fighting map[manifests.ObjectRef]string, set setCondition) {
	if len(fighting) == 0 {
		set(manifests.ConditionStalled, false, "Progressing", "")
		return
	}
	msgs := make([]string, 0, len(fighting))
	for _, m := range fighting {
		msgs = append(msgs, m)
	}
	sort.Strings(msgs)
	set(manifests.ConditionStalled, true, "FieldFight", strings.Join(msgs, "; "))
}

// readyCondition sets Ready: synced (or paused without errors, since what
// a paused Bundle applied may well be ready), in sync, and every object
// ready.
func readyCondition(in Input, conds []metav1.Condition, items []manifests.ResourceStatus, sum manifests.Summary, noErrors bool, set setCondition) {
	synced := meta.IsStatusConditionTrue(conds, manifests.ConditionSynced) || (in.Paused && noErrors && in.AnyApplied)
	if synced && sum.Drifted+sum.Missing == 0 && sum.NotReady == 0 {
		set(manifests.ConditionReady, true, "Ready", fmt.Sprintf("%d/%d objects applied and in sync", sum.Ready, sum.Desired))
		return
	}
	var why []string
	for _, it := range items {
		if it.State == manifests.StateNotReady && len(why) < 3 {
			why = append(why, fmt.Sprintf("%s/%s: %s", it.Kind, it.Name, it.Message))
		}
	}
	msg := fmt.Sprintf("%d/%d objects ready", sum.Ready, sum.Desired)
	if len(why) > 0 {
		msg += "; " + strings.Join(why, "; ")
	}
	set(manifests.ConditionReady, false, "NotReady", msg)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Equal compares two statuses as the API server stores them (times in
// seconds, empty lists absent): an equal status is not written.
func Equal(a, b manifests.BundleStatus) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
