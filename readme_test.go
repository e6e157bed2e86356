package main

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeShowsTheExample: the README's first Bundle is
// examples/web.yaml as it is, not a copy that drifted from it.
func TestReadmeShowsTheExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("examples/web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+string(example)+"```") {
		t.Error("README.md's first Bundle is not examples/web.yaml as it is: copy the file into the README again")
	}
}
