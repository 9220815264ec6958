// Package admin serves a proxy's operational endpoints (ztunnel's and the
// waypoint's): the localhost admin interface (/config_dump, /debug/pprof,
// /logging), Prometheus /metrics and the /healthz/ready readiness probe.
package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"strings"
)

// Admin returns the localhost admin handler. dump produces /config_dump;
// level is the log level /logging reads and sets.
func Admin(level *slog.LevelVar, dump func(ctx context.Context) any) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(dump(r.Context())); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	HandleProfiling(mux)
	mux.HandleFunc("/logging", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost, http.MethodPut:
			v := r.URL.Query().Get("level")
			var l slog.Level
			if err := l.UnmarshalText([]byte(v)); err != nil {
				http.Error(w, fmt.Sprintf("bad level %q: want debug, info, warn or error", v), http.StatusBadRequest)
				return
			}
			level.Set(l)
		default:
			w.Header().Set("Allow", "GET, POST, PUT")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		fmt.Fprintf(w, "level=%s\n", strings.ToLower(level.Level().String()))
	})
	return localOnly(mux)
}

// HandleProfiling serves Go's profiles (net/http/pprof) under
// /debug/pprof/ on mux.
func HandleProfiling(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// GoHeapProfileRate is the Go runtime's own heap-profile sampling rate:
// one sample per 512 KiB allocated, on average.
const GoHeapProfileRate = 512 << 10

// SetHeapProfileRate sets how many bytes are allocated, on average, between
// two samples of the heap profile (/debug/pprof/heap, /debug/pprof/allocs);
// 0 samples nothing. Every call stack sampled once keeps a record for the
// life of the process, in a hash table of up to 1.4 MiB whose pages become
// resident as records land in them, so a long-running proxy that nobody
// profiles should sample nothing. Call it first thing in main, before
// the allocations it should see.
func SetHeapProfileRate(bytes int) error {
	if bytes < 0 {
		return fmt.Errorf("heap profile rate %d: want 0 (off) or more bytes", bytes)
	}
	runtime.MemProfileRate = bytes
	return nil
}

// SampleHeapWhenServed samples the heap at Go's own rate when profiles are
// served (served), and not at all otherwise: for components whose
// profiles are behind a flag.
func SampleHeapWhenServed(served bool) {
	rate := 0
	if served {
		rate = GoHeapProfileRate
	}
	SetHeapProfileRate(rate)
}

// localOnly refuses requests from anything but loopback, whatever address
// the admin listener was bound to.
func localOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		a, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !a.Unmap().IsLoopback() {
			http.Error(w, "admin is only served to localhost", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Readiness serves /healthz/ready: 200 when ready returns nil, else 503
// with the reason.
func Readiness(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Metrics serves /metrics with h.
func Metrics(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}

// NewLogger returns a logger writing to w at level ("debug", "info",
// "warn" or "error"), as text or JSON, and the level variable that
// /logging (Admin) changes at run time.
func NewLogger(w io.Writer, level string, json bool) (*slog.Logger, *slog.LevelVar, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	lv := new(slog.LevelVar)
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if json {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h), lv, nil
}
