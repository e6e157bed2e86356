package main

// The API requests of one user over a time window, from the API server's
// audit log (level Metadata, every request). A marker request after the
// window proves that the log holds every event of the window before it is
// read.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// auditLog reads the API server's audit log.
type auditLog struct {
	path    string
	kube    kubernetes.Interface // the admin, for markers
	markers atomic.Int64
}

// requests counts one user's requests by kind. Writes are create, update,
// patch, delete and deletecollection.
type requests struct {
	Get    int            `json:"get"`
	List   int            `json:"list"`
	Watch  int            `json:"watch"`
	Writes int            `json:"writes"`
	Other  int            `json:"other"`
	ByVerb map[string]int `json:"by_verb_and_resource"` // "verb resource[/subresource]" → count
}

// offset is the log's current size: a window's events come after it.
func (a *auditLog) offset() (int64, error) {
	st, err := os.Stat(a.path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type auditEvent struct {
	Stage    string                    `json:"stage"`
	Verb     string                    `json:"verb"`
	User     struct{ Username string } `json:"user"`
	Received time.Time                 `json:"requestReceivedTimestamp"`
	Ref      *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Name        string `json:"name"`
	} `json:"objectRef"`
}

// count returns user's requests received in [from, to), reading the log
// from offset. A watch counts once, when its response starts; every other
// request when its response completes.
func (a *auditLog) count(ctx context.Context, offset int64, user string, from, to time.Time) (requests, error) {
	return a.countUsers(ctx, offset, func(u string) bool { return u == user }, from, to)
}

// countUsers is count for every user that match accepts, together.
func (a *auditLog) countUsers(ctx context.Context, offset int64, match func(string) bool, from, to time.Time) (requests, error) {
	marker := fmt.Sprintf("bench-audit-marker-%d", a.markers.Add(1))
	if _, err := a.kube.CoreV1().ConfigMaps("default").Get(ctx, marker, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return requests{}, fmt.Errorf("audit marker %s: expected NotFound, got %v", marker, err)
	}
	var events []auditEvent
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		more, next, err := a.read(offset)
		offset, events = next, append(events, more...)
		for _, e := range more {
			if e.Ref != nil && e.Ref.Name == marker && e.Stage == "ResponseComplete" {
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return requests{}, fmt.Errorf("audit log %s: marker %s not seen: %w", a.path, marker, err)
	}
	r := requests{ByVerb: map[string]int{}}
	for _, e := range events {
		if !match(e.User.Username) || e.Received.Before(from) || !e.Received.Before(to) {
			continue
		}
		if (e.Verb == "watch") != (e.Stage == "ResponseStarted") || (e.Verb != "watch" && e.Stage != "ResponseComplete") {
			continue
		}
		res := ""
		if e.Ref != nil {
			res = e.Ref.Resource
			if e.Ref.Subresource != "" {
				res += "/" + e.Ref.Subresource
			}
		}
		r.ByVerb[e.Verb+" "+res]++
		switch {
		case e.Verb == "get":
			r.Get++
		case e.Verb == "list":
			r.List++
		case e.Verb == "watch":
			r.Watch++
		case isWrite(e.Verb):
			r.Writes++
		default:
			r.Other++
		}
	}
	return r, nil
}

// read parses the complete lines of the log from offset and returns the
// offset after them.
func (a *auditLog) read(offset int64) ([]auditEvent, int64, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, err
	}
	var events []auditEvent
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return events, offset, nil // a partial line is read next time
		}
		if err != nil {
			return events, offset, err
		}
		offset += int64(len(line))
		var e auditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return events, offset, fmt.Errorf("audit log %s at %d: %w", a.path, offset, err)
		}
		events = append(events, e)
	}
}

// summary lists the non-zero counts, most first.
func (r requests) summary() string {
	keys := make([]string, 0, len(r.ByVerb))
	for k := range r.ByVerb {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if r.ByVerb[keys[i]] != r.ByVerb[keys[j]] {
			return r.ByVerb[keys[i]] > r.ByVerb[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.ByVerb[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// waitQuiet waits until user has written nothing for quiet, reading the
// log from offset, and returns the time of user's last write after since
// (since itself if none). It gives up at timeout and says so: an agent
// that writes periodically is then caught by the idle window.
func (a *auditLog) waitQuiet(ctx context.Context, offset int64, user string, since time.Time, quiet, timeout time.Duration) (time.Time, error) {
	last := since
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		events, next, err := a.read(offset)
		if err != nil {
			return false, err
		}
		offset = next
		for _, e := range events {
			if e.User.Username == user && e.Stage == "ResponseComplete" && isWrite(e.Verb) && e.Received.After(last) {
				last = e.Received
			}
		}
		return time.Since(last) >= quiet, nil
	})
	if err != nil {
		return last, fmt.Errorf("%s still writing after %s: %w", user, timeout, err)
	}
	return last, nil
}

func isWrite(verb string) bool {
	switch verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}
