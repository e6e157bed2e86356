// Command driftwatch is a GitOps agent that applies Bundles with server-side
// apply, watches every object it owns through label-filtered informers and
// repairs drift the moment another field manager takes one of its fields.
// The commands live in package commands; this file only hands them the
// process.
package main

import (
	"os"

	"github.com/driftwatch/driftwatch/commands"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(commands.Main(version, os.Args, os.Stdout, os.Stderr))
}
