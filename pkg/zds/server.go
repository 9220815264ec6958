package zds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Timeouts the Server applies to a ztunnel it is not waiting on for a caller.
const (
	helloTimeout = 10 * time.Second
	// replayAckTimeout bounds each ack during the snapshot replay; a ztunnel
	// that does not answer in time is disconnected (it will reconnect).
	replayAckTimeout = 30 * time.Second
)

// Server is the node agent's side: it listens for ztunnel, replays the pods
// it knows to each ztunnel that connects, and forwards pod additions and
// deletions to the connected one.
//
// At most one ztunnel is active. A newly connecting ztunnel replaces the
// active one: it gets the snapshot replay and all later requests, while the
// old connection is left open but idle, so the old ztunnel can drain its
// connections without being told to tear its pods down. When the active
// ztunnel goes away, the idle connections are closed: their ztunnels
// reconnect, and the newest of them gets a replay and becomes active. (A
// ztunnel that is being replaced can reconnect after its successor, when
// the node agent restarted at the same time; it then leaves its successor
// idle when it exits.)
//
// Calls for the same UID must not run concurrently. A Server is otherwise
// safe for concurrent use.
type Server struct {
	path string
	log  *slog.Logger
	ln   *net.UnixListener

	// reqLock serialises request/ack exchanges: the protocol allows one
	// outstanding request, and the snapshot replay must not interleave
	// with live additions.
	reqLock chan struct{}

	mu        sync.Mutex
	pods      map[string]*knownPod
	seq       uint64
	open      map[*serverConn]struct{} // every ztunnel past its hello
	current   *serverConn              // newest ztunnel, maybe still replaying
	active    *serverConn              // current, once its replay was acked
	connected chan struct{}            // closed while active != nil
	closed    bool
}

type knownPod struct {
	w     Workload
	netns *os.File // the Server's own duplicate; nil for a kept pod
	seq   uint64
}

// NewServer listens on path (a unix SOCK_SEQPACKET socket), replacing a
// stale socket file there and creating the parent directory. Only the
// owner may connect: whoever connects receives every pod's network
// namespace. A nil logger discards logs.
func NewServer(path string, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("zds: creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("zds: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("zds: removing stale socket: %w", err)
		}
	}
	// Create the socket with no permissions for others from the start.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("zds: listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	return &Server{
		path:      path,
		log:       logger,
		ln:        ln,
		reqLock:   make(chan struct{}, 1),
		pods:      map[string]*knownPod{},
		open:      map[*serverConn]struct{}{},
		connected: make(chan struct{}),
	}, nil
}

// Serve accepts ztunnel connections until ctx is done, then closes the
// listener and the connections and returns nil. Known pods are kept: call
// Close to release their namespaces.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.ln.Close()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				s.dropConnections()
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				s.dropConnections()
				return fmt.Errorf("zds: listener closed: %w", err)
			}
			s.log.Warn("zds: accept failed", "err", err)
			// Accept errors (EMFILE...) are transient; do not spin.
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, c)
		}()
	}
}

// Close stops the listener, disconnects ztunnel and closes the namespaces of
// known pods.
func (s *Server) Close() error {
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.dropConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for uid, p := range s.pods {
		if p.netns != nil {
			p.netns.Close()
		}
		delete(s.pods, uid)
	}
	return err
}

func (s *Server) dropConnections() {
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.open))
	for c := range s.open {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Connected reports whether a ztunnel is connected and has acked the
// snapshot replay.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active != nil
}

// WaitConnected blocks until Connected is true or ctx is done.
func (s *Server) WaitConnected(ctx context.Context) error {
	s.mu.Lock()
	ch := s.connected
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AddWorkload remembers the pod for replay to every ztunnel that connects
// later, then sends AddWorkload to the connected ztunnel and returns once it
// acked. The Server keeps its own duplicate of netns; the caller keeps
// ownership of netns.
//
// The error wraps ErrNotConnected when no ztunnel is connected or it went
// away before acking (the pod stays remembered and is replayed on the next
// connection), or is an *AckError when ztunnel refused the pod (the pod
// also stays remembered: ztunnel may accept it after a restart).
//
// A nil netns remembers a pod the node agent cannot find a namespace for: it
// is replayed as KeepWorkload, and nothing is sent now.
func (s *Server) AddWorkload(ctx context.Context, w Workload, netns *os.File) error {
	if err := w.validate(); err != nil {
		return err
	}
	var dup *os.File
	if netns != nil {
		fd, err := unix.FcntlInt(netns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("zds: duplicating netns of %s: %w", w.UID, err)
		}
		dup = os.NewFile(uintptr(fd), "netns")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if dup != nil {
			dup.Close()
		}
		return fmt.Errorf("zds: add %s: server closed", w.UID)
	}
	if old := s.pods[w.UID]; old != nil && old.netns != nil {
		old.netns.Close()
	}
	s.seq++
	s.pods[w.UID] = &knownPod{w: w, netns: dup, seq: s.seq}
	s.mu.Unlock()
	if netns == nil {
		return nil
	}

	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("zds: add %s: %w", w.UID, err)
	}
	defer s.unlock()
	c := s.activeConn()
	if c == nil {
		return fmt.Errorf("zds: add %s: %w", w.UID, ErrNotConnected)
	}
	if err := c.exchange(ctx, request{kind: requestAdd, uid: w.UID, workload: w}, netns); err != nil {
		return fmt.Errorf("zds: add %s: %w", w.UID, err)
	}
	return nil
}

// DelWorkload forgets the pod and, when a ztunnel is connected, sends
// DelWorkload and waits for its ack. It returns nil when no ztunnel is
// connected: the next one will not get the pod in its replay.
func (s *Server) DelWorkload(ctx context.Context, uid string) error {
	if err := validUID(uid); err != nil {
		return err
	}
	s.mu.Lock()
	if p := s.pods[uid]; p != nil {
		if p.netns != nil {
			p.netns.Close()
		}
		delete(s.pods, uid)
	}
	s.mu.Unlock()

	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("zds: del %s: %w", uid, err)
	}
	defer s.unlock()
	c := s.activeConn()
	if c == nil {
		return nil
	}
	err := c.exchange(ctx, request{kind: requestDel, uid: uid}, nil)
	if errors.Is(err, ErrNotConnected) {
		// Gone before acking: the next ztunnel's replay omits the pod.
		return nil
	}
	if err != nil {
		return fmt.Errorf("zds: del %s: %w", uid, err)
	}
	return nil
}

func (s *Server) lock(ctx context.Context) error {
	select {
	case s.reqLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) unlock() { <-s.reqLock }

func (s *Server) activeConn() *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// handle runs one ztunnel connection: hello, replacement of the previous
// ztunnel, snapshot replay, then reading acks until it goes away.
func (s *Server) handle(ctx context.Context, uc *net.UnixConn) {
	log := s.log.With("conn", fmt.Sprintf("%p", uc))
	c := newServerConn(uc)
	defer c.close()

	if err := c.readHello(); err != nil {
		log.Warn("zds: rejecting ztunnel connection", "err", err)
		return
	}
	log.Info("zds: ztunnel connected")

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	prev := s.current
	s.current = c
	s.open[c] = struct{}{}
	s.mu.Unlock()
	// A replaced ztunnel still replaying will never become active: cut it
	// off so its replay releases the request lock. An active one stays
	// connected, idle, so it can drain.
	if prev != nil && !prev.replayed.Load() {
		prev.close()
	}

	go c.readAcks(log)
	if err := s.replay(ctx, c, log); err != nil {
		log.Warn("zds: snapshot replay failed; disconnecting ztunnel", "err", err)
		c.close()
	}
	select {
	case <-c.done:
	case <-ctx.Done():
	}
	s.mu.Lock()
	delete(s.open, c)
	if s.current == c {
		s.current = nil
	}
	var idle []*serverConn
	if s.active == c {
		s.active = nil
		s.connected = make(chan struct{})
		// The other connections were replaced and get nothing; a newer
		// one still replaying becomes active by itself.
		for o := range s.open {
			if o != s.current {
				idle = append(idle, o)
			}
		}
	}
	s.mu.Unlock()
	log.Info("zds: ztunnel disconnected", "err", c.err())
	if len(idle) > 0 {
		log.Info("zds: the active ztunnel left; disconnecting the idle ones so that they reconnect", "idle", len(idle))
		for _, o := range idle {
			o.close()
		}
	}
}

func (s *Server) replay(ctx context.Context, c *serverConn, log *slog.Logger) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()

	// Take duplicates so a concurrent DelWorkload can close its own.
	s.mu.Lock()
	if s.current != c {
		s.mu.Unlock()
		return errors.New("replaced by a newer ztunnel")
	}
	pods := make([]knownPod, 0, len(s.pods))
	for _, p := range s.pods {
		cp := *p
		if p.netns != nil {
			fd, err := unix.FcntlInt(p.netns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				s.mu.Unlock()
				closePods(pods)
				return fmt.Errorf("duplicating netns of %s: %w", p.w.UID, err)
			}
			cp.netns = os.NewFile(uintptr(fd), "netns")
		}
		pods = append(pods, cp)
	}
	s.mu.Unlock()
	defer closePods(pods)
	slices.SortFunc(pods, func(a, b knownPod) int { return cmp.Compare(a.seq, b.seq) })

	for _, p := range pods {
		r := request{kind: requestKeep, uid: p.w.UID}
		if p.netns != nil {
			r = request{kind: requestAdd, uid: p.w.UID, workload: p.w}
		}
		actx, cancel := context.WithTimeout(ctx, replayAckTimeout)
		err := c.exchange(actx, r, p.netns)
		cancel()
		var ackErr *AckError
		if errors.As(err, &ackErr) {
			log.Warn("zds: ztunnel refused pod during replay", "uid", p.w.UID, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.kind, p.w.UID, err)
		}
	}
	actx, cancel := context.WithTimeout(ctx, replayAckTimeout)
	defer cancel()
	if err := c.exchange(actx, request{kind: requestSnapshotSent}, nil); err != nil {
		return fmt.Errorf("snapshot-sent: %w", err)
	}
	c.replayed.Store(true)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != c {
		return errors.New("replaced by a newer ztunnel")
	}
	if s.active == nil {
		close(s.connected)
	}
	s.active = c
	log.Info("zds: snapshot replayed", "pods", len(pods))
	return nil
}

func closePods(pods []knownPod) {
	for _, p := range pods {
		if p.netns != nil {
			p.netns.Close()
		}
	}
}

// serverConn is one ztunnel connection on the node agent's side.
type serverConn struct {
	pc       packetConn
	acks     chan string // error strings of acks for the outstanding request
	pending  atomic.Bool // a request awaits its ack
	replayed atomic.Bool
	done     chan struct{}

	closeOnce sync.Once
	mu        sync.Mutex
	closeErr  error
}

func newServerConn(uc *net.UnixConn) *serverConn {
	return &serverConn{pc: packetConn{c: uc}, acks: make(chan string, 1), done: make(chan struct{})}
}

func (c *serverConn) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeErr = err
		c.mu.Unlock()
		c.pc.c.Close()
		close(c.done)
	})
}

func (c *serverConn) close() { c.closeWith(nil) }

func (c *serverConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

func (c *serverConn) readHello() error {
	c.pc.c.SetReadDeadline(time.Now().Add(helloTimeout))
	defer c.pc.c.SetReadDeadline(time.Time{})
	buf := make([]byte, MaxMessageSize)
	oob := make([]byte, oobSize)
	b, files, err := c.pc.read(buf, oob)
	if err != nil {
		return fmt.Errorf("reading hello: %w", err)
	}
	closeAll(files)
	if len(files) > 0 {
		return fmt.Errorf("%w: hello carried file descriptors", ErrProtocol)
	}
	return decodeHello(b)
}

// readAcks delivers acks to the outstanding request until the connection
// fails. Anything else ends the connection: after a protocol violation the
// node agent cannot tell which request an ack belongs to.
func (c *serverConn) readAcks(log *slog.Logger) {
	buf := make([]byte, MaxMessageSize)
	oob := make([]byte, oobSize)
	for {
		b, files, err := c.pc.read(buf, oob)
		closeAll(files)
		if err != nil {
			c.closeWith(err)
			return
		}
		if len(files) > 0 {
			c.closeWith(fmt.Errorf("%w: ack carried file descriptors", ErrProtocol))
			return
		}
		msg, err := decodeAck(b)
		if err != nil {
			log.Warn("zds: bad message from ztunnel", "err", err)
			c.closeWith(err)
			return
		}
		if !c.pending.CompareAndSwap(true, false) {
			c.closeWith(fmt.Errorf("%w: ack without a request", ErrProtocol))
			return
		}
		c.acks <- msg
	}
}

// exchange sends one request and waits for its ack. If ctx ends first the
// connection is closed, since a late ack could no longer be matched.
func (c *serverConn) exchange(ctx context.Context, r request, fd *os.File) error {
	b, err := encodeRequest(r)
	if err != nil {
		return err
	}
	select {
	case <-c.done:
		return ErrNotConnected
	default:
	}
	c.pending.Store(true)
	if err := c.pc.write(b, fd); err != nil {
		c.closeWith(err)
		return fmt.Errorf("%w: %v", ErrNotConnected, err)
	}
	select {
	case msg := <-c.acks:
		if msg != "" {
			return &AckError{Message: msg}
		}
		return nil
	case <-c.done:
		return fmt.Errorf("%w: ztunnel disconnected before acking", ErrNotConnected)
	case <-ctx.Done():
		c.closeWith(fmt.Errorf("no ack for %s %s: %w", r.kind, r.uid, ctx.Err()))
		return ctx.Err()
	}
}
