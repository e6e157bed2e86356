// Package events writes the events about the objects a Bundle owns —
// drift, corrections, fights, crashes, prunes — as events/v1 Events in
// the cluster where the objects live, aggregated into series and written
// off the caller's goroutine, within a bound.
package events
