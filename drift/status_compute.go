package drift

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/manifests"
	"github.com/driftwatch/driftwatch/watch"
)

// statusInput is a copy of a Bundle's state, taken under the controller's
// lock, with each object's readiness read from the caches afterwards:
// everything computeStatus needs.
type statusInput struct {
	generation               int64
	declared, renderFailures int
	paused, detectOnly       bool
	anyApplied               bool
	corrections              int64
	lastApplied, lastDrift   time.Time
	bundleErrors             []string
	refused                  string
	// customization is the target customization chosen; waiting, the
	// dependencies a Bundle waits for.
	customization, waiting string
	problems               map[manifests.ObjectRef]problem
	drifted                map[manifests.ObjectRef]Finding
	fights                 []fightStatus
	crashes                []podCrashState
	objects                []objectStatus // every desired object
}

// fightStatus is a fight's key and its back-off times (no hits).
type fightStatus struct {
	key fightKey
	fight
}

// objectStatus is one desired object.
type objectStatus struct {
	ref        manifests.ObjectRef
	apiVersion string
	gvr        schema.GroupVersionResource
	applied    bool
	readiness  *watch.Readiness // nil: ready
}

// computeStatus is a Bundle's status: a pure function of the state, the
// previous status (for the conditions' transition times) and the time.
// An unchanged state gives an equal status, so nothing is written.
func computeStatus(in statusInput, prev manifests.BundleStatus, now time.Time) manifests.BundleStatus {
	st := manifests.BundleStatus{
		ObservedGeneration: in.generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		DriftCorrections:   in.corrections,
		Customization:      in.customization,
		LastAppliedTime:    prev.LastAppliedTime,
		LastDriftTime:      prev.LastDriftTime,
	}
	if !in.lastApplied.IsZero() {
		t := metav1.NewTime(in.lastApplied.Truncate(time.Second))
		st.LastAppliedTime = &t
	}
	if !in.lastDrift.IsZero() {
		t := metav1.NewTime(in.lastDrift.Truncate(time.Second))
		st.LastDriftTime = &t
	}
	fighting := activeFights(in.fights, now)
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
			Message: truncate(msg, 1024), ObservedGeneration: in.generation, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))})
	}
	errs := syncedCondition(in, items, sum, set)
	driftedCondition(in, items, sum, set)
	stalledCondition(fighting, set)
	readyCondition(in, st.Conditions, items, sum, len(errs) == 0, set)
	return st
}

// setCondition sets one condition of the status being computed.
type setCondition func(t string, ok bool, reason, msg string)

// activeFights returns, per object, the message of a fight that goes on:
// corrections back off, or it has not been quiet for a back-off yet.
func activeFights(fights []fightStatus, now time.Time) map[manifests.ObjectRef]string {
	out := map[manifests.ObjectRef]string{}
	for _, f := range fights {
		if f.active(now) {
			k := f.key
			out[k.Ref] = fmt.Sprintf("%s: %s is taken again and again by %s; corrections back off %s. To let %s own it, add to spec.drift.ignore: %s",
				k.Ref, k.Field, k.Manager, f.backoff, k.Manager, ignoreSuggestion(k.Ref, k.Field))
		}
	}
	return out
}

// resourceItems lists the objects that need attention, sorted, and counts
// every object by state.
func resourceItems(in statusInput, fighting map[manifests.ObjectRef]string) ([]manifests.ResourceStatus, manifests.Summary) {
	apiVersions := make(map[manifests.ObjectRef]string, len(in.objects))
	for _, o := range in.objects {
		apiVersions[o.ref] = o.apiVersion
	}
	var items []manifests.ResourceStatus
	add := func(ref manifests.ObjectRef, rs manifests.ResourceStatus) {
		rs.Kind, rs.Namespace, rs.Name = ref.Kind, ref.Namespace, ref.Name
		if rs.APIVersion = apiVersions[ref]; rs.APIVersion == "" {
			rs.APIVersion = ref.Group
		}
		items = append(items, rs)
	}
	sum := manifests.Summary{Desired: in.declared, Failed: in.renderFailures}
	for ref, p := range in.problems {
		if p.state == manifests.StateConflict {
			sum.Conflicts++
		} else {
			sum.Failed++
		}
		add(ref, manifests.ResourceStatus{State: p.state, ChangedBy: p.manager, Message: p.message})
	}
	for ref, f := range in.drifted {
		if _, isProblem := in.problems[ref]; isProblem {
			continue
		}
		state := manifests.StateDrifted
		if f.Cause == CauseDeleted {
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
	crashed := map[manifests.ObjectRef]podCrashState{}
	for _, c := range in.crashes {
		crashed[c.owner] = c
	}
	for _, o := range in.objects {
		if _, p := in.problems[o.ref]; p {
			continue
		}
		if _, d := in.drifted[o.ref]; d {
			continue
		}
		c, crashing := crashed[o.ref]
		switch {
		case !o.applied:
			sum.NotReady++
		case crashing:
			sum.NotReady++
			add(o.ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: fmt.Sprintf("pod %s %s", c.pod, c.crash)})
		case !o.readiness.Ready():
			sum.NotReady++
			msg := o.readiness.Status
			if o.readiness.Message != "" {
				msg += ": " + o.readiness.Message
			}
			add(o.ref, manifests.ResourceStatus{State: manifests.StateNotReady, Message: msg})
		default:
			sum.Ready++
		}
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	return items, sum
}

// syncedCondition sets Synced and returns the errors it reports.
func syncedCondition(in statusInput, items []manifests.ResourceStatus, sum manifests.Summary, set setCondition) []string {
	errs := append([]string(nil), in.bundleErrors...)
	for _, it := range items {
		if it.State == manifests.StateFailed || it.State == manifests.StateConflict {
			errs = append(errs, it.Message)
		}
	}
	switch {
	case in.refused != "":
		set(manifests.ConditionSynced, false, "Refused", in.refused)
	case in.waiting != "":
		set(manifests.ConditionSynced, false, "DependencyNotReady", in.waiting)
	case len(errs) > 0:
		reason := "ApplyFailed"
		if sum.Conflicts > 0 && sum.Failed == 0 && len(in.bundleErrors) == 0 {
			reason = "Conflict"
		}
		set(manifests.ConditionSynced, false, reason, strings.Join(errs, "; "))
	case in.paused:
		set(manifests.ConditionSynced, false, "Paused", "spec.paused is set: changes are not applied")
	default:
		set(manifests.ConditionSynced, true, "Applied", fmt.Sprintf("%d objects applied", sum.Ready+sum.Drifted+sum.Missing))
	}
	return errs
}

// driftedCondition sets Drifted.
func driftedCondition(in statusInput, items []manifests.ResourceStatus, sum manifests.Summary, set setCondition) {
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
	if in.detectOnly {
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
func readyCondition(in statusInput, conds []metav1.Condition, items []manifests.ResourceStatus, sum manifests.Summary, noErrors bool, set setCondition) {
	synced := meta.IsStatusConditionTrue(conds, manifests.ConditionSynced) || (in.paused && noErrors && in.anyApplied)
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
