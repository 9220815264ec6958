package hbone

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// muxConn is a multiplexed connection the pool hands out streams on.
type muxConn interface {
	usable() bool
	maxStreams() int // the peer's limit
	close()
	addCloseHook(func())
}

// pool keeps multiplexed connections per key. A connection takes new
// streams until it holds maxPerConn (or the peer's lower limit); then
// another is dialed. Connections left without streams for idle are closed.
type pool[C muxConn] struct {
	maxPerConn  int
	idle        time.Duration
	dialTimeout time.Duration

	dialed atomic.Uint64

	mu      sync.Mutex
	closed  bool
	conns   map[string][]*pooled[C]
	pending map[string][]*pendingDial[C]
}

type pooled[C muxConn] struct {
	c       C
	key     string
	inUse   int
	idleGen uint64
	timer   *time.Timer
	gone    bool
}

type pendingDial[C muxConn] struct {
	done    chan struct{}
	err     error
	waiters int
}

var errPoolClosed = errors.New("hbone: client closed")

func newPool[C muxConn](maxPerConn int, idle, dialTimeout time.Duration) *pool[C] {
	return &pool[C]{
		maxPerConn:  maxPerConn,
		idle:        idle,
		dialTimeout: dialTimeout,
		conns:       make(map[string][]*pooled[C]),
		pending:     make(map[string][]*pendingDial[C]),
	}
}

// get reserves a stream slot on a connection for key, dialing if none has
// room. Dials run detached from ctx, so one caller giving up does not fail
// the others waiting on the same dial. The slot must be given back with
// release.
func (p *pool[C]) get(ctx context.Context, key string, dial func(context.Context) (C, error)) (*pooled[C], error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		list := p.conns[key]
		for i := 0; i < len(list); i++ {
			pc := list[i]
			if !pc.c.usable() {
				continue
			}
			if pc.inUse < min(p.maxPerConn, pc.c.maxStreams()) {
				p.takeLocked(pc)
				p.mu.Unlock()
				return pc, nil
			}
		}
		var pd *pendingDial[C]
		for _, d := range p.pending[key] {
			if d.waiters < p.maxPerConn {
				pd = d
				break
			}
		}
		if pd == nil {
			pd = &pendingDial[C]{done: make(chan struct{})}
			p.pending[key] = append(p.pending[key], pd)
			go p.dial(key, pd, dial)
		}
		pd.waiters++
		p.mu.Unlock()

		select {
		case <-pd.done:
		case <-ctx.Done():
			p.mu.Lock()
			pd.waiters--
			p.mu.Unlock()
			return nil, fmt.Errorf("hbone: waiting for a connection: %w", ctx.Err())
		}
		if pd.err != nil {
			return nil, pd.err
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("hbone: waiting for a connection: %w", err)
		}
	}
}

// tryGet reserves a stream slot on a connection for key that has room,
// without dialing; nil if none has.
func (p *pool[C]) tryGet(key string) *pooled[C] {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	for _, pc := range p.conns[key] {
		if pc.c.usable() && pc.inUse < min(p.maxPerConn, pc.c.maxStreams()) {
			p.takeLocked(pc)
			return pc
		}
	}
	return nil
}

func (p *pool[C]) takeLocked(pc *pooled[C]) {
	pc.inUse++
	pc.idleGen++
	if pc.timer != nil {
		pc.timer.Stop()
		pc.timer = nil
	}
}

func (p *pool[C]) dial(key string, pd *pendingDial[C], dial func(context.Context) (C, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout)
	c, err := dial(ctx)
	cancel()
	var added *pooled[C]
	defer func() {
		if added != nil {
			added.c.addCloseHook(func() { p.forget(added) })
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.pending[key]
	for i, d := range list {
		if d == pd {
			p.pending[key] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(p.pending[key]) == 0 {
		delete(p.pending, key)
	}
	switch {
	case err != nil:
		pd.err = err
	case p.closed:
		pd.err = errPoolClosed
		go c.close()
	default:
		added = &pooled[C]{c: c, key: key}
		p.conns[key] = append(p.conns[key], added)
		p.armIdleLocked(added)
	}
	close(pd.done)
}

// release gives back a slot taken by get.
func (p *pool[C]) release(pc *pooled[C]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.inUse--
	if pc.inUse == 0 {
		if !pc.c.usable() {
			p.removeLocked(pc)
			go pc.c.close()
			return
		}
		p.armIdleLocked(pc)
	}
}

// discard gives back a slot taken by get that will not be used, and
// closes its connection unless other streams use it: the losing
// connection of a race is not kept.
func (p *pool[C]) discard(pc *pooled[C]) {
	p.mu.Lock()
	pc.inUse--
	idle := pc.inUse == 0
	if idle {
		p.removeLocked(pc)
	}
	p.mu.Unlock()
	if idle {
		pc.c.close()
	}
}

func (p *pool[C]) armIdleLocked(pc *pooled[C]) {
	if pc.gone || p.idle <= 0 {
		return
	}
	pc.idleGen++
	gen := pc.idleGen
	pc.timer = time.AfterFunc(p.idle, func() {
		p.mu.Lock()
		evict := pc.idleGen == gen && pc.inUse == 0 && !pc.gone
		if evict {
			p.removeLocked(pc)
		}
		p.mu.Unlock()
		if evict {
			pc.c.close()
		}
	})
}

// forget drops a connection that closed by itself.
func (p *pool[C]) forget(pc *pooled[C]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(pc)
}

func (p *pool[C]) removeLocked(pc *pooled[C]) {
	if pc.gone {
		return
	}
	pc.gone = true
	if pc.timer != nil {
		pc.timer.Stop()
		pc.timer = nil
	}
	list := p.conns[pc.key]
	for i, x := range list {
		if x == pc {
			p.conns[pc.key] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(p.conns[pc.key]) == 0 {
		delete(p.conns, pc.key)
	}
}

// open is the number of pooled connections.
func (p *pool[C]) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.conns {
		n += len(l)
	}
	return n
}

func (p *pool[C]) close() {
	p.mu.Lock()
	p.closed = true
	var all []*pooled[C]
	for _, l := range p.conns {
		all = append(all, l...)
	}
	for _, pc := range all {
		p.removeLocked(pc)
	}
	p.mu.Unlock()
	for _, pc := range all {
		pc.c.close()
	}
}
