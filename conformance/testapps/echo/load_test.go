package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func loadCfg(t *testing.T, target, mode string) *loadConfig {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	return &loadConfig{url: u, mode: mode, rate: 200, conns: 2, duration: 300 * time.Millisecond, timeout: 2 * time.Second}
}

// Every mode gets answers from a healthy server and counts them, with the
// pod that answered; long-lived connections that worked to the end are
// "finished".
func TestLoadModes(t *testing.T) {
	t.Setenv("POD_NAME", "p1")
	srv := httptest.NewServer(newMux(slog.New(slog.DiscardHandler), 0))
	defer srv.Close()
	for _, mode := range []string{modeNew, modeReuse, modeLong} {
		t.Run(mode, func(t *testing.T) {
			res, err := runLoad(context.Background(), loadCfg(t, srv.URL+"/x", mode), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK == 0 || res.Failed != 0 || res.Pods["p1"] != res.OK {
				t.Fatalf("ok %d, failed %d (%v), pods %v; want only answers from p1", res.OK, res.Failed, res.Errors, res.Pods)
			}
			if len(res.Spans) != 1 || !res.Spans[0].OK || res.Spans[0].N != res.OK {
				t.Errorf("spans %+v, want one run of %d answers", res.Spans, res.OK)
			}
			if mode == modeLong && (res.Conns == nil || *res.Conns != (connOutcomes{Finished: 2})) {
				t.Errorf("connections %+v, want 2 finished", res.Conns)
			}
			if mode != modeLong && res.Conns != nil {
				t.Errorf("connections %+v outside long mode", res.Conns)
			}
		})
	}
}

// A target that refuses every connection: every attempt fails, with the
// reason, in one run of failures.
func TestLoadRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, mode := range []string{modeNew, modeLong} {
		t.Run(mode, func(t *testing.T) {
			res, err := runLoad(context.Background(), loadCfg(t, "http://"+addr+"/", mode), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != 0 || res.Failed == 0 || res.Errors["connection refused"] != res.Failed {
				t.Errorf("ok %d, failed %d, errors %v; want only refusals", res.OK, res.Failed, res.Errors)
			}
			if len(res.Spans) != 1 || res.Spans[0].OK {
				t.Errorf("spans %+v, want one run of failures", res.Spans)
			}
		})
	}
}

// How a long-lived connection ends depends on what the server does: a
// close (with or without word) is clean, silence is a hang.
func TestLongConnOutcomes(t *testing.T) {
	answer := func(c net.Conn, extra string) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"+extra+"\r\npod=s\n")
	}
	for _, tc := range []struct {
		name   string
		serve  func(c net.Conn, br *bufio.Reader) // called for each request
		want   connOutcomes
		wantOK bool // the first request was answered
	}{
		{"answer, then Connection: close", func(c net.Conn, _ *bufio.Reader) { answer(c, "Connection: close\r\n"); c.Close() }, connOutcomes{Closed: 1}, true},
		{"close without an answer", func(c net.Conn, _ *bufio.Reader) { c.Close() }, connOutcomes{Closed: 1}, false},
		{"reset", func(c net.Conn, _ *bufio.Reader) { c.(*net.TCPConn).SetLinger(0); c.Close() }, connOutcomes{Closed: 1}, false},
		{"no answer", func(net.Conn, *bufio.Reader) {}, connOutcomes{Hung: 1}, false},
		{"an error status", func(c net.Conn, _ *bufio.Reader) {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
		}, connOutcomes{Failed: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			defer close(done)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					req.Body.Close()
					tc.serve(c, br)
				}
			}()
			cfg := loadCfg(t, "http://"+ln.Addr().String()+"/", modeLong)
			// Long enough for a second request, and for the hang's timeout.
			cfg.conns, cfg.rate, cfg.timeout, cfg.duration = 1, 50, 200*time.Millisecond, time.Second
			res, err := runLoad(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.Conns == nil || *res.Conns != tc.want {
				t.Errorf("connections %+v, want %+v", res.Conns, tc.want)
			}
			if got := res.OK == 1; got != tc.wantOK || res.OK+res.Failed != 1 {
				t.Errorf("ok %d, failed %d (%v); want one request, answered: %v", res.OK, res.Failed, res.Errors, tc.wantOK)
			}
		})
	}
}

// The end of the measurement cuts waiting requests short without counting
// them as failures.
func TestLoadEndIsNotAFailure(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	cfg := loadCfg(t, srv.URL, modeReuse)
	cfg.timeout = time.Minute
	res, err := runLoad(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != 0 {
		t.Errorf("ok %d, failed %d (%v); want none counted", res.OK, res.Failed, res.Errors)
	}
}

func TestParseLoad(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"http://echo/"}, true},
		{[]string{"-mode", "long", "-conns", "8", "http://10.0.0.1:8080/x"}, true},
		{[]string{"http://echo/", "-rate", "5", "-duration", "1m", "-warmup", "30s"}, true},
		{nil, false},
		{[]string{"echo:80"}, false},
		{[]string{"https://echo/"}, false},
		{[]string{"http://echo/", "-mode", "burst"}, false},
		{[]string{"http://echo/", "-rate", "0"}, false},
		{[]string{"http://echo/", "-rate", "NaN"}, false},
		{[]string{"http://echo/", "-conns", "0"}, false},
		{[]string{"http://echo/", "-duration", "0s"}, false},
		{[]string{"http://echo/", "-warmup", "-1s"}, false},
	} {
		if _, err := parseLoad(tc.args); (err == nil) != tc.ok {
			t.Errorf("parseLoad(%q): error %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}

func TestPodOf(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"node=n\npod=echo-1\nnamespace=x\n", "echo-1"},
		{"pod=\n", ""},
		{"no report", ""},
		{"header.X=pod=evil\npod=p\n", "p"},
	} {
		if got := podOf([]byte(tc.body)); got != tc.want {
			t.Errorf("podOf(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// podOf returns a whole line's value, and only one that follows "pod=" at
// the start of a line.
func FuzzPodOf(f *testing.F) {
	for _, s := range []string{"pod=a\n", "x\npod=b", "pod=", "\n\npod=c\r\n", "podpod=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got := podOf([]byte(body))
		if strings.Contains(got, "\n") {
			t.Fatalf("podOf(%q) = %q spans lines", body, got)
		}
		if got != "" && !strings.HasPrefix(body, "pod="+got) && !strings.Contains(body, "\npod="+got) {
			t.Fatalf("podOf(%q) = %q, which no line pod=... carries", body, got)
		}
	})
}
