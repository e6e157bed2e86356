// Package watch keeps one label-filtered shared informer per resource type
// in use — metadata-only unless readiness needs the object's status — starts
// and stops each as the set of owned objects changes, trims what the caches
// hold, and delivers events through a handler interface.
package watch
