package events

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/klog/v2"

	"github.com/driftwatch/driftwatch/manifests"
)

// What a Recorder keeps and writes.
const (
	// seriesWindow: an event equal to one written less than this ago
	// (same object, reason and note) only counts into that event's
	// series, as events/v1 defines series.
	seriesWindow = 6 * time.Minute
	// seriesFlush is how often the counts of series are written.
	seriesFlush = 15 * time.Second
	// eventQueue bounds the writes waiting; beyond it events are dropped
	// (and logged), never the agent's memory.
	eventQueue = 1000
	// maxNote is the API server's limit on an event's note.
	maxNote = 1024
	// writeDelay is how long a new event waits before it is written: the
	// write of a drift's event comes after its correction's apply instead
	// of beside it, on an API server that both share (make bench: the
	// correction's apply took 6 ms longer than the floor's, with the event
	// and status writes of the same drift made at the same moment).
	writeDelay = 250 * time.Millisecond
)

// Recorder writes events/v1 Events about the objects a Bundle owns, in
// the target cluster where they live: regarding the object, related to
// the Bundle. Every object has its own, so that one busy object or Bundle
// does not silence the others (client-go's core/v1 recorder allows ~25
// events per involved object, then one per 5 minutes, and names the
// Bundle in all of them). Equal events repeated within seriesWindow
// become one event with a series count, written every seriesFlush: a
// fight storm costs one write per object and note per flush, not one per
// edit. Writes are asynchronous and bounded; none is made under a lock.
type Recorder struct {
	client     eventsclient.EventsV1Interface
	controller string
	instance   string
	logger     klog.Logger

	queue chan *eventEntry

	mu     sync.Mutex
	recent map[eventKey]*eventEntry
	// dropped counts events dropped with the queue full, since last logged.
	dropped int
}

type eventKey struct {
	regarding corev1.ObjectReference
	reason    string
	note      string
}

// eventEntry is one event written or to be written; its fields are
// guarded by Recorder.mu.
type eventEntry struct {
	event *eventsv1.Event // as created; name set once written
	count int32           // occurrences; > 1 makes a series
	last  time.Time       // the latest occurrence
	// flushed is the count last written; queued says a write is waiting,
	// not before due.
	flushed int32
	queued  bool
	due     time.Time
}

// New returns a Recorder writing through client as controller (the
// agent's field manager); Run writes what it records.
func New(client eventsclient.EventsV1Interface, controller string) *Recorder {
	host, _ := os.Hostname()
	return &Recorder{client: client, controller: "driftwatch.io/" + controller, instance: controller + "-" + host,
		logger: klog.Background(), queue: make(chan *eventEntry, eventQueue), recent: map[eventKey]*eventEntry{}}
}

// Emit records an event regarding an object, related to its Bundle; it
// makes no API call.
func (e *Recorder) Emit(regarding, related corev1.ObjectReference, eventType, reason, action, note string) {
	if len(note) > maxNote {
		note = note[:maxNote-3] + "..."
	}
	now := time.Now()
	key := eventKey{regarding: regarding, reason: reason, note: note}
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.recent[key]; en != nil && now.Sub(en.last) < seriesWindow {
		en.count++
		en.last = now
		return // written by the next flush
	}
	ns := regarding.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	en := &eventEntry{count: 1, last: now, event: &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Name: fmt.Sprintf("%s.%x", regarding.Name, now.UnixNano())},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: e.controller, ReportingInstance: e.instance,
		Action: action, Reason: reason, Regarding: regarding, Related: &related,
		Note: note, Type: eventType,
	}}
	e.recent[key] = en
	e.enqueue(en)
}

// enqueue queues a write of en. The caller holds e.mu.
func (e *Recorder) enqueue(en *eventEntry) {
	if en.queued {
		return
	}
	select {
	case e.queue <- en:
		en.queued, en.due = true, time.Now().Add(writeDelay)
	default:
		e.dropped++
	}
}

// Run writes queued events and flushes series until ctx ends, logging
// through ctx's logger.
func (e *Recorder) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	e.logger = klog.FromContext(ctx)
	t := time.NewTicker(seriesFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case en := <-e.queue:
			if !e.waitUntilDue(ctx, en) {
				return
			}
			e.write(ctx, en)
		case now := <-t.C:
			e.flush(now)
		}
	}
}

// waitUntilDue waits until en is due; false: ctx ended first. Entries are
// queued in order, so only the first of a burst waits.
func (e *Recorder) waitUntilDue(ctx context.Context, en *eventEntry) bool {
	e.mu.Lock()
	wait := time.Until(en.due)
	e.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// flush queues the series whose counts grew and forgets the events whose
// window passed.
func (e *Recorder) flush(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for key, en := range e.recent {
		switch {
		case en.flushed > 0 && en.count != en.flushed:
			e.enqueue(en)
		case now.Sub(en.last) >= seriesWindow && !en.queued:
			delete(e.recent, key)
		}
	}
	if e.dropped > 0 {
		e.logger.Info("Object events dropped: too many waiting to be written", "dropped", e.dropped)
		e.dropped = 0
	}
}

// write creates the event, or updates its series.
func (e *Recorder) write(ctx context.Context, en *eventEntry) {
	e.mu.Lock()
	en.queued = false
	ev := en.event.DeepCopy()
	count, last, created := en.count, en.last, en.flushed > 0
	e.mu.Unlock()
	var err error
	if created && count > 1 {
		patch := fmt.Appendf(nil, `{"series":{"count":%d,"lastObservedTime":%q}}`, count,
			metav1.NewMicroTime(last).Format(metav1.RFC3339Micro))
		_, err = e.client.Events(ev.Namespace).Patch(ctx, ev.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	} else if !created {
		_, err = e.client.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	}
	if err != nil {
		e.logger.V(2).Info("Object event not written", "object", ev.Regarding.Name, "reason", ev.Reason, "err", err)
		return // an event is worth one try; the next occurrence tries again
	}
	e.mu.Lock()
	if created {
		en.flushed = count
	} else {
		en.flushed = 1 // the event as created; repeats meanwhile go into its series at the next flush
	}
	e.mu.Unlock()
}

// BundleRef is the reference of a Bundle, as an event's related object.
func BundleRef(key types.NamespacedName, uid types.UID) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: manifests.Group + "/" + manifests.Version, Kind: manifests.Kind,
		Namespace: key.Namespace, Name: key.Name, UID: uid}
}
