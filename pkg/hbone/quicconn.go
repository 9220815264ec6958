package hbone

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// quicStream is what both http3.Stream and http3.RequestStream offer.
type quicStream interface {
	io.ReadWriteCloser // Close ends the send side only (FIN)
	CancelRead(quic.StreamErrorCode)
	CancelWrite(quic.StreamErrorCode)
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// quicTunnel is an HTTP/3 CONNECT stream as a net.Conn.
type quicTunnel struct {
	quicStream
	local, remote net.Addr
	once          sync.Once
	release       func()

	mu         sync.Mutex
	writeEnded bool
}

func newQUICTunnel(s quicStream, local, remote net.Addr, release func()) *quicTunnel {
	return &quicTunnel{quicStream: s, local: local, remote: remote, release: release}
}

func (t *quicTunnel) LocalAddr() net.Addr  { return t.local }
func (t *quicTunnel) RemoteAddr() net.Addr { return t.remote }

// CloseWrite sends FIN; reads go on.
func (t *quicTunnel) CloseWrite() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writeEnded {
		return nil
	}
	t.writeEnded = true
	return t.quicStream.Close()
}

// Close ends both directions: FIN if not yet sent, and STOP_SENDING for
// anything the peer still sends.
func (t *quicTunnel) Close() error {
	var err error
	t.once.Do(func() {
		t.quicStream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
		err = t.CloseWrite()
		if t.release != nil {
			t.release()
		}
	})
	return err
}
