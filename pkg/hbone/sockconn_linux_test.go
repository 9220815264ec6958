package hbone

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestSockConnBehavesLikeTCPConn checks that the raw-syscall data path
// reports what net.TCPConn reports: data in order, EOF on half-close,
// deadline and closed-connection errors, a failed write to a reset peer.
func TestSockConnBehavesLikeTCPConn(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c net.Conn, peer *net.TCPConn)
	}{
		{"bulk both ways", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			data := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: many partial writes
			go func() {
				c.Write(data)
				c.(closeWriter).CloseWrite()
			}()
			got, err := io.ReadAll(peer)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("peer read %d bytes, %v", len(got), err)
			}
			go func() {
				peer.Write(data)
				peer.CloseWrite()
			}()
			got, err = io.ReadAll(c)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, %v", len(got), err)
			}
		}},
		{"EOF after the peer half-closes", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			peer.Write([]byte("x"))
			peer.CloseWrite()
			buf := make([]byte, 8)
			if n, err := c.Read(buf); n != 1 || err != nil {
				t.Fatalf("first read: %d, %v", n, err)
			}
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("second read: %d, %v; want EOF", n, err)
			}
		}},
		{"zero-length read", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("read: %d, %v", n, err)
			}
		}},
		{"read deadline", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := c.Read(make([]byte, 8))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read: %v; want a timeout", err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "read" {
				t.Fatalf("error %#v; want a read OpError", err)
			}
		}},
		{"read on a closed conn", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			c.Close()
			if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read: %v; want net.ErrClosed", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write: %v; want net.ErrClosed", err)
			}
		}},
		{"close wakes a blocked read", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			done := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 8))
				done <- err
			}()
			c.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read: %v; want net.ErrClosed", err)
			}
		}},
		{"write to a reset peer fails", func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			peer.SetLinger(0)
			peer.Close() // RST
			buf := make([]byte, 64<<10)
			var err error
			for range 100 {
				if _, err = c.Write(buf); err != nil {
					break
				}
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("write: %v; want a write OpError", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			c := fastConn(a)
			if _, ok := c.(*sockConn); !ok {
				t.Fatalf("fastConn returned %T", c)
			}
			if _, ok := c.(io.ReaderFrom); ok {
				t.Fatal("sockConn must not expose ReadFrom (it would bypass it)")
			}
			tt.run(t, c, b.(*net.TCPConn))
		})
	}
}

func TestFastConnLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := fastConn(a); got != a {
		t.Fatalf("fastConn(pipe) = %T", got)
	}
}
