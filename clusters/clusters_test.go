package clusters

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"

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

// TestImpersonatedClientsAreBounded: clients are kept for at most
// MaxImpersonated accounts, the least recently used dropped first.
func TestImpersonatedClientsAreBounded(t *testing.T) {
	target, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	p := NewProvider(target, target)
	first, err := p.Impersonate(types.NamespacedName{Namespace: "a", Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxImpersonated + 10 {
		if _, err := p.Impersonate(types.NamespacedName{Namespace: "a", Name: fmt.Sprint("sa-", i)}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if _, err := p.Impersonate(types.NamespacedName{Namespace: "a", Name: "first"}); err != nil { // in use: kept
				t.Fatal(err)
			}
		}
	}
	if len(p.impersonated) != MaxImpersonated || len(p.used) != MaxImpersonated {
		t.Fatalf("%d clients kept (%d in the order), want %d", len(p.impersonated), len(p.used), MaxImpersonated)
	}
	again, _ := p.Impersonate(types.NamespacedName{Namespace: "a", Name: "first"})
	if again != first {
		t.Error("a recently used account's clients were dropped")
	}
	if _, ok := p.impersonated["system:serviceaccount:a:sa-0"]; ok {
		t.Error("the least recently used account's clients were kept")
	}
}
