package clusters

import (
	"testing"

	"k8s.io/client-go/rest"
)

// TestProviderSignalsANewSource: replacing the source cluster's clients
// wakes whoever holds the channel that Source returned, and Source then
// hands out the new clients and a new channel.
func TestProviderSignalsANewSource(t *testing.T) {
	a, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p := NewProvider(a, a)
	got, swapped := p.Source()
	if got != a {
		t.Fatal("Source is not the source given")
	}
	select {
	case <-swapped:
		t.Fatal("signalled before any change")
	default:
	}
	p.ReplaceSource(b)
	select {
	case <-swapped:
	default:
		t.Fatal("not signalled after ReplaceSource")
	}
	got, next := p.Source()
	if got != b || next == swapped {
		t.Fatal("Source after the change: want the new clients and a new channel")
	}
	if p.Target() != a {
		t.Fatal("the target changed with the source")
	}
}
