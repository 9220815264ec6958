package hbone

import (
	"bytes"
	"errors"
	"net"
	"os"
	"slices"
	"testing"
	"time"
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
			if !slices.Equal(got, tt.want) {
				t.Fatalf("writes %v, want %v", got, tt.want)
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

// stalledPair is a TCP connection whose far end never reads, with small
// buffers at both ends, and the near end wrapped in a batchConn.
func stalledPair(t *testing.T) *batchConn {
	t.Helper()
	c, far := tcpPair(t)
	if err := far.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	return newBatchConn(fastConn(c))
}

// The write byte timeout fails a write the peer takes nothing of, with
// ErrWriteByteTimeout; a deadline set from above still applies, with its
// own error, and does not lift the timeout.
func TestBatchConnWriteByteTimeout(t *testing.T) {
	tests := []struct {
		name     string
		timeout  time.Duration
		deadline time.Duration // from now, set through SetWriteDeadline; 0: none
		want     error
	}{
		{"timeout", 50 * time.Millisecond, 0, ErrWriteByteTimeout},
		{"deadline from above first", time.Hour, time.Millisecond, os.ErrDeadlineExceeded},
		{"timeout before a later deadline", 50 * time.Millisecond, time.Hour, ErrWriteByteTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := stalledPair(t)
			b.setWriteByteTimeout(tt.timeout)
			if tt.deadline != 0 {
				if err := b.SetWriteDeadline(time.Now().Add(tt.deadline)); err != nil {
					t.Fatal(err)
				}
			}
			b.hold()
			_, err := b.Write(make([]byte, 4<<20))
			if rerr := b.release(); err == nil {
				err = rerr
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Write = %v, want %v", err, tt.want)
			}
			if tt.want != ErrWriteByteTimeout && errors.Is(err, ErrWriteByteTimeout) {
				t.Fatalf("Write = %v, blamed on the write byte timeout", err)
			}
			if _, err2 := b.Write([]byte("x")); err2 != err {
				t.Fatalf("later Write = %v, want the first error again", err2)
			}
		})
	}
}
