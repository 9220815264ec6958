// Package xdstest helps tests see what an xDS server sent.
package xdstest

import (
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/xds"
)

// Bodies keeps the body of every resource of one subscription, as last
// accepted; xds.Client keeps only names and versions. Its Apply serves as,
// or from, a Subscription's Apply.
type Bodies struct {
	mu sync.Mutex
	m  map[string]*anypb.Any
}

// Apply records a delta; it never rejects one.
func (b *Bodies) Apply(d xds.Delta) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]*anypb.Any)
	}
	for _, name := range d.Removed {
		delete(b.m, name)
	}
	for _, r := range d.Updated {
		b.m[r.Name] = r.Body
	}
	return nil
}

// Get returns the body of the resource name, if one was accepted and not
// removed since.
func (b *Bodies) Get(name string) (*anypb.Any, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	body, ok := b.m[name]
	return body, ok
}
