//go:build !linux

package commands

// releaseBinaryPages does nothing outside Linux.
func releaseBinaryPages() int64 { return 0 }
