// Package acceptor accepts connections on many listening sockets with one
// goroutine. In in-pod mode ztunnel listens on three ports in every pod; a
// goroutine parked in Accept on each costs a 4 KB stack and its
// descriptor, some 12 KB per pod, while the pod is idle. The same goroutine
// waits for the first datagram on each pod's QUIC socket (AwaitReadable).
//
// The listeners are registered, level-triggered, with an epoll instance of
// the acceptor's own; that instance's descriptor is itself waited on
// through the Go runtime's poller, so the goroutine sleeps like any
// network reader until some listener has a connection to accept.
package acceptor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Acceptor accepts on every listener added and hands each connection to
// that listener's serve function, on a goroutine of its own. The zero
// value is not usable; use New.
type Acceptor struct {
	log *slog.Logger

	mu     sync.Mutex
	lns    map[int32]*listener
	next   int32
	ep     *epoll // nil while no listener is registered
	closed bool
}

type listener struct {
	id    int32
	ln    *net.TCPListener // nil for a socket awaited (AwaitReadable)
	rc    syscall.RawConn
	fd    int // valid while the listener is registered (it is closed only after removal)
	serve func(*net.TCPConn)
	// ready, for a socket awaited, is called once it has data to read.
	ready func()
	// paused: accepting failed (out of descriptors, say) and the listener
	// is out of the epoll set until the back-off ends.
	paused bool
	delay  time.Duration
}

// epoll is one epoll instance and the goroutine waiting on it; it ends
// when the last listener is removed.
type epoll struct {
	fd   int
	file *os.File // fd, registered with the runtime poller
	rc   syscall.RawConn
	done chan struct{}
}

// New returns an Acceptor; its goroutine runs only while it has listeners.
func New(logger *slog.Logger) *Acceptor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Acceptor{log: logger, lns: map[int32]*listener{}}
}

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("acceptor: closed")

// Add starts accepting on ln; serve gets each connection on a new
// goroutine. The returned remove stops accepting; call it before closing
// ln. Connections already handed to serve are not affected.
func (a *Acceptor) Add(ln *net.TCPListener, serve func(*net.TCPConn)) (remove func(), err error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("acceptor: %w", err)
	}
	return a.add(&listener{ln: ln, rc: rc, serve: serve})
}

// AwaitReadable calls ready, on a goroutine of its own, once the socket of
// rc has something to read, and then forgets the socket: a socket that
// may never be used waits at the cost of an entry in the epoll set. The
// returned cancel stops waiting; call it before closing the socket. ready
// is not called after cancel returned, but may already run.
func (a *Acceptor) AwaitReadable(rc syscall.RawConn, ready func()) (cancel func(), err error) {
	return a.add(&listener{rc: rc, ready: ready})
}

func (a *Acceptor) add(l *listener) (remove func(), err error) {
	l.fd = -1
	if err := l.rc.Control(func(f uintptr) { l.fd = int(f) }); err != nil {
		return nil, fmt.Errorf("acceptor: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	if a.ep == nil {
		ep, err := newEpoll()
		if err != nil {
			return nil, err
		}
		a.ep = ep
		go a.run(ep)
	}
	for {
		// Ids name listeners in epoll events: never one still in use.
		if a.next++; a.next <= 0 {
			a.next = 1
		}
		if a.lns[a.next] == nil {
			break
		}
	}
	l.id = a.next
	if err := a.ep.ctl(unix.EPOLL_CTL_ADD, l); err != nil {
		a.stopIfIdleLocked()
		return nil, fmt.Errorf("acceptor: registering %s: %w", l, err)
	}
	a.lns[l.id] = l
	var once sync.Once
	return func() { once.Do(func() { a.remove(l) }) }, nil
}

func (a *Acceptor) remove(l *listener) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(l)
}

func (a *Acceptor) removeLocked(l *listener) {
	if a.lns[l.id] != l {
		return
	}
	delete(a.lns, l.id)
	if !l.paused && a.ep != nil {
		a.ep.ctl(unix.EPOLL_CTL_DEL, l)
	}
	a.stopIfIdleLocked()
}

// stopIfIdleLocked ends the goroutine once no listener is left.
func (a *Acceptor) stopIfIdleLocked() {
	if len(a.lns) == 0 && a.ep != nil {
		a.ep.file.Close() // wakes the goroutine, which then exits
		a.ep = nil
	}
}

// Close stops accepting on every listener (it does not close them) and
// waits for the goroutine to end.
func (a *Acceptor) Close() error {
	a.mu.Lock()
	a.closed = true
	clear(a.lns)
	ep := a.ep
	a.stopIfIdleLocked()
	a.mu.Unlock()
	if ep != nil {
		<-ep.done
	}
	return nil
}

// Listeners counts the listeners accepted on and the sockets awaited.
func (a *Acceptor) Listeners() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lns)
}

func newEpoll() (*epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("acceptor: epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to the runtime poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("acceptor: %w", err)
	}
	file := os.NewFile(uintptr(fd), "acceptor-epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("acceptor: %w", err)
	}
	return &epoll{fd: fd, file: file, rc: rc, done: make(chan struct{})}, nil
}

func (e *epoll) ctl(op int, l *listener) error {
	// The id, not the descriptor, names the listener: a descriptor number
	// can be reused once its listener is closed.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: l.id}
	var err error
	cerr := e.rc.Control(func(epfd uintptr) {
		err = unix.EpollCtl(int(epfd), op, l.fd, &ev)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// run waits for listeners with pending connections and accepts them,
// until the epoll instance is closed.
func (a *Acceptor) run(ep *epoll) {
	defer close(ep.done)
	events := make([]unix.EpollEvent, 32)
	var ready []int32
	for {
		ready = ready[:0]
		var werr error
		err := ep.rc.Read(func(epfd uintptr) bool {
			for {
				n, err := unix.EpollWait(int(epfd), events, 0)
				switch {
				case err == unix.EINTR:
					continue
				case err != nil:
					werr = err
					return true
				case n == 0:
					return false // nothing ready: wait until something is
				}
				for _, ev := range events[:n] {
					ready = append(ready, ev.Fd)
				}
				return true
			}
		})
		if err != nil {
			return // closed: no listener left
		}
		if werr != nil {
			a.log.Error("acceptor stopped", "err", werr)
			return
		}
		for _, id := range ready {
			a.mu.Lock()
			l := a.lns[id]
			if l != nil && l.ready != nil {
				// Taken out under the lock: a cancel that returns
				// before this point means ready is never called.
				a.removeLocked(l)
			}
			a.mu.Unlock()
			switch {
			case l == nil:
			case l.ready != nil:
				go l.ready()
			default:
				a.acceptAll(ep, l)
			}
		}
	}
}

// maxBatch bounds the connections taken from one listener before the
// others get their turn.
const maxBatch = 64

// acceptAll accepts what is pending on l, without waiting.
func (a *Acceptor) acceptAll(ep *epoll, l *listener) {
	for range maxBatch {
		var (
			nfd int
			err error
		)
		// Control keeps the listener's descriptor open while accept runs,
		// and fails once the listener is closed. It never waits: epoll
		// says when there is something to accept.
		rerr := l.rc.Control(func(fd uintptr) {
			for {
				nfd, _, err = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				if err != unix.EINTR && err != unix.ECONNABORTED {
					return
				}
			}
		})
		switch {
		case rerr != nil:
			// Closed without being removed first: closing took it out
			// of the epoll set; forget it.
			a.mu.Lock()
			if a.lns[l.id] == l {
				delete(a.lns, l.id)
				a.stopIfIdleLocked()
			}
			a.mu.Unlock()
			return
		case err == unix.EAGAIN:
			l.delay = 0
			return
		case err != nil:
			a.pause(ep, l, err)
			return
		}
		c, cerr := tcpConn(nfd)
		if cerr != nil {
			a.log.Warn("accepted connection unusable", "addr", l.ln.Addr(), "err", cerr)
			continue
		}
		go l.serve(c)
	}
}

// pause takes l out of the epoll set for a while after accept failed (out
// of descriptors, say), so that the loop does not spin on it.
func (a *Acceptor) pause(ep *epoll, l *listener, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.lns[l.id]; !ok || a.ep != ep {
		return
	}
	l.delay = min(max(2*l.delay, 5*time.Millisecond), time.Second)
	a.log.Warn("accept failed", "addr", l.ln.Addr(), "err", err, "retry_in", l.delay)
	l.paused = true
	ep.ctl(unix.EPOLL_CTL_DEL, l)
	time.AfterFunc(l.delay, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, ok := a.lns[l.id]; !ok || a.ep != ep || !l.paused {
			return
		}
		l.paused = false
		if err := ep.ctl(unix.EPOLL_CTL_ADD, l); err != nil {
			a.log.Error("re-registering listener", "addr", l.ln.Addr(), "err", err)
		}
	})
}

// String names the listener, or the socket awaited, in errors and logs.
func (l *listener) String() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return fmt.Sprintf("awaited socket %d", l.fd)
}

// tcpConn makes a *net.TCPConn of an accepted descriptor (and takes it).
func tcpConn(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f) // a duplicate, registered with the poller
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("acceptor: %T is not a TCP connection", c)
	}
	return tc, nil
}
