package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

func do(t *testing.T, h http.Handler, method, url, remote string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, url, nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Body)
	return w.Code, string(b)
}

func TestAdmin(t *testing.T) {
	var level slog.LevelVar
	h := Admin(&level, func(context.Context) any { return map[string]int{"workloads": 3} })
	tests := []struct {
		method, url, remote string
		code                int
		body                string
	}{
		{"GET", "/config_dump", "127.0.0.1:5000", 200, `"workloads": 3`},
		{"GET", "/config_dump", "10.0.0.1:5000", 403, "only served to localhost"},
		{"GET", "/config_dump", "[::1]:5000", 200, "workloads"},
		{"GET", "/logging", "127.0.0.1:1", 200, "level=info"},
		{"POST", "/logging?level=debug", "127.0.0.1:1", 200, "level=debug"},
		{"POST", "/logging?level=loud", "127.0.0.1:1", 400, "bad level"},
		{"DELETE", "/logging", "127.0.0.1:1", 405, ""},
		{"GET", "/debug/pprof/", "127.0.0.1:1", 200, "goroutine"},
	}
	for _, tt := range tests {
		code, body := do(t, h, tt.method, tt.url, tt.remote)
		if code != tt.code || !strings.Contains(body, tt.body) {
			t.Errorf("%s %s from %s = %d %q, want %d containing %q", tt.method, tt.url, tt.remote, code, body, tt.code, tt.body)
		}
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %v after POST", level.Level())
	}
}

func TestReadiness(t *testing.T) {
	var err error = errors.New("certificates pending")
	h := Readiness(func() error { return err })
	if code, body := do(t, h, "GET", "/healthz/ready", "10.0.0.1:1"); code != 503 || !strings.Contains(body, "certificates pending") {
		t.Fatalf("%d %q", code, body)
	}
	err = nil
	if code, _ := do(t, h, "GET", "/healthz/ready", "10.0.0.1:1"); code != 200 {
		t.Fatalf("%d", code)
	}
}

func TestSetHeapProfileRate(t *testing.T) {
	saved := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = saved })
	for _, tc := range []struct {
		rate    int
		wantErr bool
	}{
		{rate: 0},
		{rate: 1},
		{rate: GoHeapProfileRate},
		{rate: -1, wantErr: true},
	} {
		runtime.MemProfileRate = saved
		err := SetHeapProfileRate(tc.rate)
		switch {
		case tc.wantErr && err == nil:
			t.Errorf("rate %d: no error", tc.rate)
		case tc.wantErr && runtime.MemProfileRate != saved:
			t.Errorf("rate %d: refused, but the rate changed to %d", tc.rate, runtime.MemProfileRate)
		case !tc.wantErr && err != nil:
			t.Errorf("rate %d: %v", tc.rate, err)
		case !tc.wantErr && runtime.MemProfileRate != tc.rate:
			t.Errorf("rate %d: runtime samples every %d bytes", tc.rate, runtime.MemProfileRate)
		}
	}
	for _, served := range []bool{false, true} {
		SampleHeapWhenServed(served)
		if want := map[bool]int{false: 0, true: GoHeapProfileRate}[served]; runtime.MemProfileRate != want {
			t.Errorf("served %v: runtime samples every %d bytes, want %d", served, runtime.MemProfileRate, want)
		}
	}
}
