package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attributes is a label set ready to record with: the attribute set and the
// SDK options built from it once. Passing an attribute.Set to an instrument
// costs three allocations per request (the option, and the option slices of
// Add and Record); passing Attributes costs none. The zero value records
// with no labels.
type Attributes struct {
	set attribute.Set
	add []metric.AddOption
	rec []metric.RecordOption
}

// NewAttributes prepares set for recording.
func NewAttributes(set attribute.Set) Attributes {
	opt := metric.WithAttributeSet(set)
	return Attributes{
		set: set,
		add: []metric.AddOption{opt},
		rec: []metric.RecordOption{opt},
	}
}

// Attributes is NewAttributes(l.Set()).
func (l Labels) Attributes() Attributes { return NewAttributes(l.Set()) }

// Set returns the attribute set, for instruments this package does not
// wrap.
func (a Attributes) Set() attribute.Set { return a.set }

// DefaultAttributeCacheSize is the AttributeCache bound NewAttributeCache
// uses for a size of 0.
const DefaultAttributeCacheSize = 4096

// AttributeCache maps Labels to their Attributes, so that a proxy pays for
// building a label set once per combination of source, destination,
// response code and flags rather than once per request: a hit costs a map
// lookup, a miss the few kilobytes and microseconds of Labels.Set. Its size
// is bounded; when full it starts again empty, which costs a burst of
// misses but keeps memory bounded whatever the traffic. It is safe for
// concurrent use.
type AttributeCache struct {
	max int

	mu sync.RWMutex
	m  map[Labels]Attributes
}

// NewAttributeCache returns a cache holding at most size label sets; 0
// means DefaultAttributeCacheSize.
func NewAttributeCache(size int) *AttributeCache {
	if size <= 0 {
		size = DefaultAttributeCacheSize
	}
	return &AttributeCache{max: size, m: make(map[Labels]Attributes)}
}

// Get returns l's Attributes, building them on a miss.
func (c *AttributeCache) Get(l Labels) Attributes {
	c.mu.RLock()
	a, ok := c.m[l]
	c.mu.RUnlock()
	if ok {
		return a
	}
	// Build outside the lock: it is the slow part, and two callers racing
	// on the same labels build equal values.
	a = l.Attributes()
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.m[l]; ok {
		return prev
	}
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[l] = a
	return a
}

// Len reports how many label sets the cache holds.
func (c *AttributeCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
