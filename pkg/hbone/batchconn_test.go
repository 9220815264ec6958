package hbone

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// recordConn records each Write as one system call would see it.
type recordConn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchConn(t *testing.T) {
	big := bytes.Repeat([]byte("x"), largeCopyBuf+1)
	tests := []struct {
		name string
		run  func(b *batchConn)
		want []int // sizes of the underlying writes
	}{
		{"unheld writes go straight out", func(b *batchConn) {
			b.Write([]byte("ab"))
			b.Write([]byte("cde"))
		}, []int{2, 3}},
		{"held writes leave together on release", func(b *batchConn) {
			b.hold()
			b.Write([]byte("ab"))
			b.Write([]byte("cde"))
			b.release()
		}, []int{5}},
		{"a full buffer is sent first", func(b *batchConn) {
			b.hold()
			b.Write(big[:largeCopyBuf-1])
			b.Write([]byte("ab"))
			b.release()
		}, []int{largeCopyBuf - 1, 2}},
		{"a write larger than the buffer passes through", func(b *batchConn) {
			b.hold()
			b.Write([]byte("ab"))
			b.Write(big)
			b.release()
		}, []int{2, len(big)}},
		{"release with nothing held writes nothing", func(b *batchConn) {
			b.hold()
			b.release()
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			tt.run(newBatchConn(rc))
			var got []int
			for _, w := range rc.writes {
				got = append(got, len(w))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("writes %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("writes %v, want %v", got, tt.want)
				}
			}
		})
	}
	t.Run("a failed write fails every later one", func(t *testing.T) {
		boom := errors.New("boom")
		rc := &recordConn{err: boom}
		b := newBatchConn(rc)
		b.hold()
		if _, err := b.Write([]byte("ab")); err != nil {
			t.Fatalf("held write: %v", err)
		}
		if err := b.release(); !errors.Is(err, boom) {
			t.Fatalf("release: %v", err)
		}
		rc.err = nil
		if _, err := b.Write([]byte("c")); !errors.Is(err, boom) {
			t.Fatalf("write after failure: %v", err)
		}
	})
}
