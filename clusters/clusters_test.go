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

// TestAnsweringAgain: the Answering channel closes when the source answers
// after it did not, and only then.
func TestAnsweringAgain(t *testing.T) {
	a, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p := NewProvider(a, a)
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	first := p.Answering()
	p.contact(true)
	if closed(first) {
		t.Fatal("an answer while answering already closed the channel")
	}
	p.contact(false)
	p.contact(false)
	if closed(first) {
		t.Fatal("a failure closed the channel")
	}
	p.contact(true)
	if !closed(first) {
		t.Fatal("the first answer after failures did not close the channel")
	}
	if next := p.Answering(); closed(next) {
		t.Fatal("the next channel is closed already")
	}
}
