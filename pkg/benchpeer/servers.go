package benchpeer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Server is a loopback TCP server that handles every accepted connection
// with the same function until it is closed.
type Server struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

// Addr is the address the server listens on.
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// Close stops accepting, closes open connections and waits for handlers.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func serve(ctx context.Context, handle func(net.Conn)) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, conn: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conn, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	return s, nil
}

// Echo starts a server that writes back everything it reads.
func Echo(ctx context.Context) (*Server, error) {
	return serve(ctx, func(c net.Conn) {
		io.Copy(c, c)
	})
}

// Sink starts a server that reads until EOF and then answers with the
// number of bytes it read as a big-endian uint64, so a client knows every
// byte crossed the path before it stops the clock.
func Sink(ctx context.Context) (*Server, error) {
	return serve(ctx, func(c net.Conn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], uint64(n))
		c.Write(buf[:])
	})
}

// closeWriter is implemented by connections that can half-close.
type closeWriter interface{ CloseWrite() error }

// SendBulk writes n bytes to c in chunks of size chunk, half-closes it, and
// waits for a Sink's count. It fails if the count is not n.
func SendBulk(c net.Conn, n int64, chunk int) error {
	buf := make([]byte, chunk)
	for sent := int64(0); sent < n; {
		w := int64(len(buf))
		if n-sent < w {
			w = n - sent
		}
		m, err := c.Write(buf[:w])
		sent += int64(m)
		if err != nil {
			return err
		}
	}
	cw, ok := c.(closeWriter)
	if !ok {
		return errors.New("benchpeer: connection cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return err
	}
	if g := int64(binary.BigEndian.Uint64(got[:])); g != n {
		return &CountError{Sent: n, Received: g}
	}
	return nil
}

// CountError reports that a sink received a different number of bytes than
// were sent.
type CountError struct{ Sent, Received int64 }

func (e *CountError) Error() string {
	return fmt.Sprintf("benchpeer: sink received %d of %d bytes", e.Received, e.Sent)
}
