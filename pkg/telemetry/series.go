package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
)

// seriesLimit is the most label sets a metric holds, the overflow set
// included, as the SDK's default cardinality limit: once it is reached,
// new label sets are counted under overflowAttrs.
const seriesLimit = 2000

// overflowAttrs is the label set of measurements beyond seriesLimit, as
// the SDK names it.
func overflowAttrs() attribute.Set {
	return attribute.NewSet(attribute.Bool("otel.metric.overflow", true))
}

// seriesMap holds a metric's series S by label set, up to seriesLimit.
type seriesMap[S any] struct {
	newSeries func(attribute.Set) *S

	// series maps attribute.Distinct to *S; mu serializes adding to it
	// (reads take no lock).
	series   sync.Map
	mu       sync.Mutex
	n        int
	overflow *S
}

// lookup returns attrs' series, adding it if it is new and there is room.
func (m *seriesMap[S]) lookup(attrs attribute.Set) *S {
	key := attrs.Equivalent()
	if s, ok := m.series.Load(key); ok {
		return s.(*S)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.series.Load(key); ok {
		return s.(*S)
	}
	if m.n >= seriesLimit-1 {
		if m.overflow == nil {
			m.overflow = m.newSeries(overflowAttrs())
		}
		return m.overflow
	}
	s := m.newSeries(attrs)
	m.series.Store(key, s)
	m.n++
	return s
}

// appendAll appends every series, the overflow one last.
func (m *seriesMap[S]) appendAll(out []*S) []*S {
	m.series.Range(func(_, v any) bool {
		out = append(out, v.(*S))
		return true
	})
	m.mu.Lock()
	overflow := m.overflow
	m.mu.Unlock()
	if overflow != nil {
		out = append(out, overflow)
	}
	return out
}
