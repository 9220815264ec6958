package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// newTestWorkers returns workers that serve with fn, for a Proxy that
// only starts and stops them.
func newTestWorkers(t *testing.T, fn func(*tunnel, http.ResponseWriter, *http.Request)) *workers {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ctx: ctx, cancel: cancel}
	p.h2 = workers{p: p, fn: fn, jobs: make(chan *h2Job)}
	t.Cleanup(p.Close)
	return &p.h2
}

// A request runs on a worker, which serves the next one too.
func TestWorkersServe(t *testing.T) {
	ws := newTestWorkers(t, func(_ *tunnel, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	for range 3 {
		rw := httptest.NewRecorder()
		ws.serve(nil, rw, httptest.NewRequest(http.MethodGet, "/", nil))
		if rw.Code != http.StatusTeapot {
			t.Fatalf("status %d, want %d", rw.Code, http.StatusTeapot)
		}
	}
	ws.mu.Lock()
	n := ws.n
	ws.mu.Unlock()
	if n != 1 {
		t.Errorf("%d workers for requests one after another, want 1", n)
	}
}

// A request's panic is raised again on the caller's goroutine, where
// net/http expects it, and the worker goes on serving.
func TestWorkersPanic(t *testing.T) {
	ws := newTestWorkers(t, func(_ *tunnel, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
	})
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", v)
			}
		}()
		ws.serve(nil, httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/abort", nil))
		t.Error("serve returned")
	}()
	rw := httptest.NewRecorder()
	ws.serve(nil, rw, httptest.NewRequest(http.MethodGet, "/", nil))
	if rw.Code != http.StatusOK {
		t.Errorf("after a panic: status %d", rw.Code)
	}
}

// Beyond maxWorkers requests at once, the others run on their callers'
// goroutines: none waits for a worker.
func TestWorkersBeyondMax(t *testing.T) {
	const n = maxWorkers + 10
	var all sync.WaitGroup
	all.Add(n)
	release := make(chan struct{})
	ws := newTestWorkers(t, func(_ *tunnel, w http.ResponseWriter, r *http.Request) {
		all.Done()
		<-release
	})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { ws.serve(nil, httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)) })
	}
	all.Wait() // every request is running at once
	close(release)
	wg.Wait()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.n > maxWorkers {
		t.Errorf("%d workers, want at most %d", ws.n, maxWorkers)
	}
}
