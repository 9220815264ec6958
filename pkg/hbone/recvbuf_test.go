package hbone

import (
	"bytes"
	"testing"
)

// FuzzRecvBuffer checks recvBuffer against bytes.Buffer for any sequence
// of writes and reads: same bytes, same order, same length.
func FuzzRecvBuffer(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint16(1000), uint16(7))
	f.Add(bytes.Repeat([]byte{0xff}, 100), uint16(recvChunk+1), uint16(recvChunk-1))
	f.Add([]byte{}, uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, ops []byte, wsize, rsize uint16) {
		var got recvBuffer
		var want bytes.Buffer
		next := byte(0)
		for _, op := range ops {
			switch op % 3 {
			case 0, 1: // write wsize (scaled by op) bytes
				n := int(wsize) * int(op>>2+1) % (3 * recvChunk)
				p := make([]byte, n)
				for i := range p {
					p[i] = next
					next++
				}
				got.Write(p)
				want.Write(p)
			case 2:
				n := int(rsize) * int(op>>2+1) % (3 * recvChunk)
				a, b := make([]byte, n), make([]byte, n)
				na := got.Read(a)
				nb, _ := want.Read(b)
				if na != nb || !bytes.Equal(a[:na], b[:nb]) {
					t.Fatalf("read %d: got %d bytes, want %d (or contents differ)", n, na, nb)
				}
			}
			if got.Len() != want.Len() {
				t.Fatalf("Len = %d, want %d", got.Len(), want.Len())
			}
		}
		rest := make([]byte, got.Len())
		if n := got.Read(rest); n != len(rest) || !bytes.Equal(rest, want.Bytes()) {
			t.Fatal("final contents differ")
		}
		if got.Len() != 0 || got.chunks != nil {
			t.Fatalf("drained buffer still holds %d bytes in %d chunks", got.Len(), len(got.chunks))
		}
		got.Write([]byte("x"))
		got.Reset()
		if got.Len() != 0 || got.chunks != nil {
			t.Fatal("Reset left data behind")
		}
	})
}

// TestRecvBufferReuse: a stream fills and drains its buffer with nearly
// every frame; once a chunk is pooled, doing so allocates nothing.
func TestRecvBufferReuse(t *testing.T) {
	var b recvBuffer
	p, q := make([]byte, 1500), make([]byte, 4096)
	b.Write(p)
	b.Read(q)
	if n := testing.AllocsPerRun(100, func() {
		b.Write(p)
		if got := b.Read(q); got != len(p) {
			t.Fatalf("read %d bytes, wrote %d", got, len(p))
		}
	}); n != 0 {
		t.Errorf("%v allocations per write and drain, want 0", n)
	}
}
