package ratelimit

import (
	"sync"
	"time"
)

// table holds the buckets of one policy, one per key, at most max of
// them: when it is full a new key takes the place of the least recently
// used one. Keys are 64-bit keyed hashes (see keyer), so a bucket costs the
// same whatever the key's length.
//
// It is split into shards, each with its own lock and its own LRU list, so
// that requests of different clients rarely wait for each other; the
// order of eviction is then least recently used within a shard, which is
// as good for bounding memory and close enough for fairness.
type table struct {
	shards    []shard
	shardBits uint
}

// shard is an LRU list kept in one slice: entries link to each other by
// index, so that adding a key allocates only when the slice grows, up to
// its capacity, and never after.
type shard struct {
	mu      sync.Mutex
	index   map[uint64]int32
	entries []entry
	cap     int
	head    int32 // most recently used; -1 when empty
	tail    int32 // least recently used
}

type entry struct {
	key        uint64
	b          bucket
	prev, next int32
}

// minShardKeys is the smallest shard worth having: below it a table is one
// shard.
const minShardKeys = 64

// maxShards bounds the shards of a table; a power of two.
const maxShards = 16

func newTable(maxKeys int) *table {
	maxKeys = max(maxKeys, 1)
	n, shift := 1, uint(0)
	for n < maxShards && maxKeys/(n*2) >= minShardKeys {
		n, shift = n*2, shift+1
	}
	t := &table{shards: make([]shard, n), shardBits: shift}
	for i := range t.shards {
		t.shards[i] = shard{cap: maxKeys / n, head: -1, tail: -1}
	}
	return t
}

func (t *table) shard(key uint64) *shard {
	if t.shardBits == 0 {
		return &t.shards[0]
	}
	return &t.shards[key>>(64-t.shardBits)]
}

// take takes a token from key's bucket (a full one if key has none) at
// now; see bucket.take.
func (t *table) take(key uint64, r rate, now int64) (ok bool, remaining uint64, wait time.Duration) {
	s := t.shard(key)
	s.mu.Lock()
	e := s.get(key, r, now)
	ok, remaining, wait = e.b.take(r, now)
	s.mu.Unlock()
	return ok, remaining, wait
}

// give returns a token to key's bucket, if it still has one.
func (t *table) give(key uint64, r rate) {
	s := t.shard(key)
	s.mu.Lock()
	if i, ok := s.index[key]; ok {
		s.entries[i].b.give(r)
	}
	s.mu.Unlock()
}

// len counts the buckets held.
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

// get returns key's entry, made most recently used; a new key gets a full
// bucket, in a new slot or in the least recently used one's.
func (s *shard) get(key uint64, r rate, now int64) *entry {
	if i, ok := s.index[key]; ok {
		s.touch(i)
		return &s.entries[i]
	}
	if s.index == nil {
		s.index = make(map[uint64]int32)
	}
	var i int32
	if len(s.entries) < s.cap {
		i = int32(len(s.entries))
		s.entries = append(s.entries, entry{prev: -1, next: -1})
	} else {
		i = s.tail
		delete(s.index, s.entries[i].key)
		s.unlink(i)
	}
	s.entries[i].key = key
	s.entries[i].b = r.fill(now)
	s.index[key] = i
	s.pushFront(i)
	return &s.entries[i]
}

func (s *shard) touch(i int32) {
	if s.head == i {
		return
	}
	s.unlink(i)
	s.pushFront(i)
}

func (s *shard) unlink(i int32) {
	e := &s.entries[i]
	if e.prev >= 0 {
		s.entries[e.prev].next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.entries[e.next].prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *shard) pushFront(i int32) {
	e := &s.entries[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.entries[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}
