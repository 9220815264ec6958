package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// Handler is ztunnel's side of the protocol. Run calls it from one
// goroutine, one request at a time, and acks each request with the error
// the Handler returns.
type Handler interface {
	// AddWorkload starts proxying for the pod whose network namespace is
	// netns. The Handler owns netns and must close it, also on error. Adding
	// a UID it already has must succeed (it may replace the namespace).
	AddWorkload(ctx context.Context, w Workload, netns *os.File) error
	// KeepWorkload tells the Handler that the node agent still knows the pod
	// but has no namespace to send; the Handler keeps it if it has it.
	KeepWorkload(ctx context.Context, uid string) error
	// DelWorkload stops proxying for the pod and closes its listeners.
	// Deleting an unknown UID must succeed.
	DelWorkload(ctx context.Context, uid string) error
	// SnapshotSent reports that the handler's workloads now match the node
	// agent's: Run has already deleted every workload the replay did not
	// mention. In-pod mode can become ready here.
	SnapshotSent(ctx context.Context) error
}

// Backoff bounds between reconnection attempts in Run.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run connects to the node agent at path, says hello and serves its requests,
// reconnecting with exponential backoff whenever the connection fails, until
// ctx is done; then it returns nil. A nil logger discards logs.
//
// Run does the snapshot reconciliation itself: it remembers which workloads
// the Handler holds, and when a replay ends it calls DelWorkload for those
// the replay neither added nor kept, before calling SnapshotSent.
func Run(ctx context.Context, path string, h Handler, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &client{path: path, h: h, log: logger, known: map[string]bool{}}
	backoff := minBackoff
	for {
		synced, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			backoff = minBackoff
		}
		logger.Warn("zds: connection to node agent lost; reconnecting", "path", path, "err", err, "backoff", backoff)
		// Full jitter keeps ztunnels from reconnecting in lockstep.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

type client struct {
	path  string
	h     Handler
	log   *slog.Logger
	known map[string]bool // UIDs the Handler holds
}

// session runs one connection; synced reports whether it got past the
// snapshot, which resets the backoff.
func (c *client) session(ctx context.Context) (synced bool, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", c.path)
	if err != nil {
		return false, fmt.Errorf("zds: connecting to node agent: %w", err)
	}
	uc := conn.(*net.UnixConn)
	defer uc.Close()
	stop := context.AfterFunc(ctx, func() { uc.Close() })
	defer stop()
	pc := packetConn{c: uc}

	hello, err := encodeHello()
	if err != nil {
		return false, err
	}
	if err := pc.write(hello, nil); err != nil {
		return false, err
	}
	c.log.Info("zds: connected to node agent", "path", c.path)

	seen := map[string]bool{}
	snapshotDone := false
	buf := make([]byte, MaxMessageSize)
	oob := make([]byte, oobSize)
	for {
		b, files, err := pc.read(buf, oob)
		if err != nil && !errors.Is(err, ErrProtocol) {
			return snapshotDone, fmt.Errorf("zds: reading from node agent: %w", err)
		}
		var herr error
		if err != nil {
			herr = err
		} else {
			herr = c.dispatch(ctx, b, files, seen, &snapshotDone)
		}
		msg := ""
		if herr != nil {
			msg = herr.Error()
			c.log.Warn("zds: request failed", "err", herr)
		}
		ack, err := encodeAck(msg)
		if err != nil {
			return snapshotDone, err
		}
		if err := pc.write(ack, nil); err != nil {
			return snapshotDone, err
		}
	}
}

// dispatch handles one request packet and returns the error to ack with. It
// takes ownership of files.
func (c *client) dispatch(ctx context.Context, b []byte, files []*os.File, seen map[string]bool, snapshotDone *bool) error {
	r, err := decodeRequest(b)
	if err != nil {
		closeAll(files)
		return err
	}
	if r.kind != requestAdd && len(files) > 0 {
		closeAll(files)
		return fmt.Errorf("%w: %s request carried file descriptors", ErrProtocol, r.kind)
	}
	switch r.kind {
	case requestAdd:
		if len(files) != 1 {
			closeAll(files)
			return fmt.Errorf("%w: add %s carried %d file descriptors, want the netns", ErrProtocol, r.uid, len(files))
		}
		if !*snapshotDone {
			seen[r.uid] = true
		}
		if err := c.h.AddWorkload(ctx, r.workload, files[0]); err != nil {
			return fmt.Errorf("add %s: %w", r.uid, err)
		}
		c.known[r.uid] = true
	case requestKeep:
		if *snapshotDone {
			return fmt.Errorf("%w: keep %s after the snapshot", ErrProtocol, r.uid)
		}
		seen[r.uid] = true
		if err := c.h.KeepWorkload(ctx, r.uid); err != nil {
			return fmt.Errorf("keep %s: %w", r.uid, err)
		}
	case requestDel:
		delete(seen, r.uid)
		if err := c.h.DelWorkload(ctx, r.uid); err != nil {
			return fmt.Errorf("del %s: %w", r.uid, err)
		}
		delete(c.known, r.uid)
	case requestSnapshotSent:
		if *snapshotDone {
			return fmt.Errorf("%w: second snapshot-sent on one connection", ErrProtocol)
		}
		*snapshotDone = true
		var errs []error
		for uid := range c.known {
			if seen[uid] {
				continue
			}
			c.log.Info("zds: workload gone while disconnected; removing", "uid", uid)
			if err := c.h.DelWorkload(ctx, uid); err != nil {
				errs = append(errs, fmt.Errorf("del %s: %w", uid, err))
				continue
			}
			delete(c.known, uid)
		}
		if err := c.h.SnapshotSent(ctx); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	return nil
}
