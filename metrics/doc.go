// Package metrics holds driftwatch's Prometheus registry and every metric it
// exports; the names and labels are a contract with the shipped dashboard
// and alert rules. It imports no other driftwatch package.
package metrics
