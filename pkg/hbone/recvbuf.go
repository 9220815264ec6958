package hbone

import "sync"

// recvChunk is the unit of a stream's receive buffer.
const recvChunk = 16 << 10

var recvChunks = sync.Pool{New: func() any { b := make([]byte, recvChunk); return &b }}

// recvBuffer holds a stream's received, unread bytes in pooled chunks. A
// drained buffer holds no memory, so an idle stream costs nothing here,
// and a busy one recycles chunks instead of growing and dropping slices.
type recvBuffer struct {
	chunks []*[]byte
	// inline backs chunks whenever it is emptied: a stream drains its
	// buffer after nearly every frame, and a new slice for the next one
	// would cost an allocation each time. A recvBuffer is not copied.
	inline [2]*[]byte
	head   int // read offset in chunks[0]
	tail   int // write offset in the last chunk
	n      int // unread bytes
}

// Len is the number of unread bytes.
func (b *recvBuffer) Len() int { return b.n }

// Write appends p.
func (b *recvBuffer) Write(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.tail == recvChunk {
			if b.chunks == nil {
				b.chunks = b.inline[:0]
			}
			b.chunks = append(b.chunks, recvChunks.Get().(*[]byte))
			b.tail = 0
		}
		c := *b.chunks[len(b.chunks)-1]
		m := copy(c[b.tail:], p)
		b.tail += m
		b.n += m
		p = p[m:]
	}
}

// Read moves up to len(p) bytes into p.
func (b *recvBuffer) Read(p []byte) int {
	read := 0
	for len(p) > 0 && b.n > 0 {
		c := *b.chunks[0]
		end := recvChunk
		if len(b.chunks) == 1 {
			end = b.tail
		}
		m := copy(p, c[b.head:end])
		b.head += m
		b.n -= m
		read += m
		p = p[m:]
		if b.head == end {
			b.dropFirst()
		}
	}
	return read
}

// Reset discards every unread byte and returns the chunks to the pool.
func (b *recvBuffer) Reset() {
	for len(b.chunks) > 0 {
		b.dropFirst()
	}
	b.n = 0
}

func (b *recvBuffer) dropFirst() {
	recvChunks.Put(b.chunks[0])
	b.chunks[0] = nil
	b.chunks = b.chunks[1:]
	b.head = 0
	if len(b.chunks) == 0 {
		// Back to the inline array: a longer one grown on the heap goes.
		b.chunks = nil
		b.tail = 0
	}
}
