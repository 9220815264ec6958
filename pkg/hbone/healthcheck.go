package hbone

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// HTTP/2 health checks. A peer that vanished without closing its
// connection (a node that lost power, a path that drops everything) leaves
// it silent: TCP retransmits for a quarter of an hour before it gives up,
// and meanwhile the pool would put new tunnels on the connection, each
// failing only at its connect timeout. The QUIC side has its idle timeout
// and keep-alives for this; HTTP/2 has PING.
const (
	// DefaultPingInterval is how long a connection may read nothing
	// before it sends a PING.
	DefaultPingInterval = 10 * time.Second
	// DefaultPingTimeout is how long it then waits for any frame (the
	// answer, or anything else) before it fails.
	DefaultPingTimeout = 5 * time.Second
)

// ErrPeerSilent fails a connection, and every tunnel on it, whose peer
// sent nothing at all for its ping interval and then nothing for its ping
// timeout after a PING.
var ErrPeerSilent = errors.New("hbone: peer sent nothing, not even a PING answer")

// PingFlags turns command-line settings, where an interval of 0 turns
// health checks off, into ClientConfig's and ServerConfig's PingInterval
// and PingTimeout, where 0 means the default and a negative value off.
func PingFlags(interval, timeout time.Duration) (time.Duration, time.Duration, error) {
	switch {
	case interval < 0:
		return 0, 0, fmt.Errorf("HBONE ping interval %s: want a positive duration, or 0 for no health checks", interval)
	case interval == 0:
		return -1, -1, nil
	case timeout <= 0:
		return 0, 0, fmt.Errorf("HBONE ping timeout %s: want a positive duration", timeout)
	}
	return interval, timeout, nil
}

// pingDefaults applies the defaults of PingInterval and PingTimeout: 0
// means the default, negative never (both 0 in h2Config).
func pingDefaults(interval, timeout time.Duration) (time.Duration, time.Duration) {
	if interval == 0 {
		interval = DefaultPingInterval
	}
	if timeout == 0 {
		timeout = DefaultPingTimeout
	}
	if interval < 0 || timeout < 0 {
		return 0, 0
	}
	return interval, timeout
}

// healthCheck sends a PING on a connection that read nothing for an
// interval and fails the connection if nothing comes in the timeout
// after it. Any frame proves the peer alive, not only the PING's answer:
// the answer may queue behind data the peer is sending.
type healthCheck struct {
	c                 *h2Conn
	interval, timeout time.Duration

	mu     sync.Mutex // orders the timer's runs after its creation
	t      *time.Timer
	last   uint64 // frames read at the last run
	pinged bool   // a PING went out at the last run
}

// startHealthCheck arms c's health check, if its config asks for one.
func (c *h2Conn) startHealthCheck() {
	if c.cfg.pingInterval <= 0 || c.cfg.pingTimeout <= 0 {
		return
	}
	h := &healthCheck{c: c, interval: c.cfg.pingInterval, timeout: c.cfg.pingTimeout}
	h.mu.Lock()
	h.t = time.AfterFunc(h.interval, h.run)
	h.mu.Unlock()
	c.addCloseHook(func() { h.t.Stop() })
}

func (h *healthCheck) run() {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.c
	select {
	case <-c.done:
		return
	default:
	}
	n := c.framesRead.Load()
	switch {
	case n != h.last:
		h.last, h.pinged = n, false
		h.t.Reset(h.interval)
	case h.pinged:
		c.log.Warn("hbone: closing a connection whose peer went silent", "remote", c.nc.RemoteAddr(),
			"silentAtLeast", (h.interval + h.timeout).String())
		c.closeHard(fmt.Errorf("%w for %v after %v of silence", ErrPeerSilent, h.timeout, h.interval))
	default:
		// Any frame answers, so the PING's payload is not matched.
		c.queue(func() error { return c.fr.WritePing(false, [8]byte{}) })
		h.pinged = true
		h.t.Reset(h.timeout)
	}
}
