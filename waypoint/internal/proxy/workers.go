package proxy

import (
	"net/http"
	"sync"
)

// maxWorkers bounds the goroutines kept to run HTTP/2 handlers; requests
// beyond it run on the stream's own goroutine.
const maxWorkers = 64

// workers runs HTTP/2 requests on goroutines kept from one request to the
// next. net/http's HTTP/2 server starts a goroutine per stream, and its
// stack, starting small, is copied to a larger one several times on the
// way down the request path: a tenth of the CPU of an HTTP/2 request.
// A worker's stack has already grown, and the stream's goroutine only
// waits for it.
type workers struct {
	p *Proxy
	// fn serves a request: p.serveRequest.
	fn   func(*tunnel, http.ResponseWriter, *http.Request)
	jobs chan *h2Job
	mu   sync.Mutex
	n    int // running workers
}

// h2Job is one request handed to a worker; done receives the value the
// request panicked with, or nil.
type h2Job struct {
	t    *tunnel
	w    http.ResponseWriter
	r    *http.Request
	done chan any
}

var h2Jobs = sync.Pool{New: func() any { return &h2Job{done: make(chan any, 1)} }}

// serve runs the request on a worker, or on this goroutine if none is
// free and no more may start, and returns once it was served. A panic
// (http.ErrAbortHandler, say) is raised again here, for net/http.
func (ws *workers) serve(t *tunnel, w http.ResponseWriter, r *http.Request) {
	j := h2Jobs.Get().(*h2Job)
	j.t, j.w, j.r = t, w, r
	select {
	case ws.jobs <- j:
	default:
		if !ws.start(j) {
			j.t, j.w, j.r = nil, nil, nil
			h2Jobs.Put(j)
			ws.fn(t, w, r)
			return
		}
	}
	v := <-j.done
	j.t, j.w, j.r = nil, nil, nil
	h2Jobs.Put(j)
	if v != nil {
		panic(v)
	}
}

// start starts a worker with j as its first job, unless maxWorkers run
// or the proxy is closing.
func (ws *workers) start(j *h2Job) bool {
	ws.mu.Lock()
	if ws.n >= maxWorkers || !ws.p.enter() {
		ws.mu.Unlock()
		return false
	}
	ws.n++
	ws.mu.Unlock()
	go ws.run(j)
	return true
}

// run serves jobs until the proxy closes.
func (ws *workers) run(j *h2Job) {
	defer func() {
		ws.mu.Lock()
		ws.n--
		ws.mu.Unlock()
		ws.p.wg.Done()
	}()
	for {
		j.done <- ws.do(j)
		select {
		case j = <-ws.jobs:
		case <-ws.p.ctx.Done():
			return
		}
	}
}

// do serves j and returns what it panicked with.
func (ws *workers) do(j *h2Job) (v any) {
	defer func() { v = recover() }()
	ws.fn(j.t, j.w, j.r)
	return nil
}
