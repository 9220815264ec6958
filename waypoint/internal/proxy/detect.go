package proxy

import (
	"bytes"
	"errors"
	"net"
	"os"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// h2Preface starts every HTTP/2 connection with prior knowledge.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// detect reads the first bytes of a tunnel, up to timeout, and tells
// HTTP/1.x from HTTP/2 with prior knowledge from anything else. It
// returns the bytes read, which belong to the protocol and must be
// replayed to whoever serves it. A client that sends nothing within
// timeout is taken to speak a server-first protocol (MySQL, SMTP, ...),
// passed through as TCP: a Service port with appProtocol skips the wait.
func detect(c net.Conn, timeout time.Duration) (config.Protocol, []byte, error) {
	buf := make([]byte, 0, len(h2Preface))
	deadline := time.Now().Add(timeout)
	if err := c.SetReadDeadline(deadline); err != nil {
		return config.TCP, nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		if p, done := sniff(buf); done {
			return p, buf, nil
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				p, _ := sniff(buf)
				if len(buf) == 0 || p == config.Detect {
					p = config.TCP
				}
				return p, buf, nil
			}
			if len(buf) > 0 {
				return config.TCP, buf, nil
			}
			return config.TCP, nil, err
		}
	}
}

// sniff decides from the first bytes; done is false while more bytes
// could change the answer.
func sniff(b []byte) (p config.Protocol, done bool) {
	if len(b) == 0 {
		return config.Detect, false
	}
	if bytes.HasPrefix([]byte(h2Preface), b) {
		if len(b) == len(h2Preface) {
			return config.HTTP2, true
		}
		// "PRI" is also a token: keep reading until the preface is whole
		// or broken.
		return config.Detect, false
	}
	// HTTP/1.x: a method token of upper-case letters, then a space.
	for i, c := range b {
		switch {
		case c == ' ' && i > 0:
			return config.HTTP, true
		case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
			if i >= 20 {
				return config.TCP, true
			}
		default:
			return config.TCP, true
		}
	}
	if len(b) == cap(b) {
		return config.TCP, true
	}
	return config.Detect, false
}

// sniffPreface tells HTTP/2 with prior knowledge from HTTP/1.x on a port
// declared HTTP: it reads until the bytes stop matching the HTTP/2
// preface, or match it whole, which an HTTP/1.x request line does within
// its first two bytes ("PRI" is no method a client sends). It returns the
// bytes read, for the protocol's server to replay.
func sniffPreface(c net.Conn, timeout time.Duration) (h2 bool, read []byte, err error) {
	buf := make([]byte, 0, len(h2Preface))
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return false, nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		if !bytes.HasPrefix([]byte(h2Preface), buf) {
			return false, buf, nil
		}
		if len(buf) == len(h2Preface) {
			return true, buf, nil
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if len(buf) > 0 && len(buf) < len(h2Preface) {
				// Part of a preface and no more: HTTP/1.x's server
				// answers what it makes of it.
				return false, buf, nil
			}
			return len(buf) == len(h2Preface), buf, err
		}
	}
}

// prefixConn replays bytes read during detection before reading on.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes when the tunnel supports it (HBONE does), so
// TCP passthrough keeps byte-exact half-close semantics.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
