// Package status computes what a Bundle's status says — its conditions
// (Synced, Ready, Drifted, Stalled), the summary and the objects that need
// attention — as a pure function of a copy of the Bundle's state (Input),
// the previous status and the time; and classifies Pod crashes, which make
// the objects behind them not ready. The drift controller takes the copy
// and writes the result.
package status
