package cluster

import "strings"

func containsLine(s, line string) bool { return countLines(s, line) > 0 }

func countLines(s, line string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			n++
		}
	}
	return n
}
