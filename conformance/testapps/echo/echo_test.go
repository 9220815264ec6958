package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiffmesh/skiff/conformance/testapps/echo/echopb"
)

func TestGRPCEchoReportsWhoAnswered(t *testing.T) {
	t.Setenv("POD_NAME", "p1")
	t.Setenv("NODE_NAME", "n1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := serveGRPC(ln, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer gs.Stop()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := echopb.NewEchoClient(conn).Echo(context.Background(), &echopb.EchoRequest{Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Message != "hi" || r.Pod != "p1" || r.Node != "n1" || !strings.HasPrefix(r.Remote, "127.0.0.1:") || r.Authority != ln.Addr().String() {
		t.Errorf("unexpected report: %v", r)
	}
}

func TestClientErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"get without URL", func() error { return get(nil) }},
		{"get closed port", func() error { return get([]string{"http://" + closed + "/", "-timeout", "1s"}) }},
		{"grpc without address", func() error { return grpcCall(nil) }},
		{"grpc closed port", func() error { return grpcCall([]string{closed, "-timeout", "1s"}) }},
	} {
		if err := tc.run(); err == nil {
			t.Errorf("%s: want an error", tc.name)
		}
	}
}

// get -include prints each answer's status and headers in a stable order.
func TestWriteHead(t *testing.T) {
	var b strings.Builder
	writeHead(&b, &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"3"}, "Ratelimit": {`"a/b";r=0;t=3`}}})
	if want := "status=429\nresponse.Ratelimit=\"a/b\";r=0;t=3\nresponse.Retry-After=3\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// -fail-every N answers exactly every Nth report request with 503, and
// never the readiness probe, so that a flaky pod stays in its Service.
func TestFailEvery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failEvery int
		want      string // statuses of six report requests, one letter each: o 200, x 503
	}{
		{"never", 0, "oooooo"},
		{"every request", 1, "xxxxxx"},
		{"every third", 3, "ooxoox"},
		{"rarer than the requests", 7, "oooooo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged strings.Builder
			srv := httptest.NewServer(newMux(slog.New(slog.NewTextHandler(&logged, nil)), tc.failEvery))
			defer srv.Close()
			var got strings.Builder
			for i := range 6 {
				if code := status(t, srv.URL+"/healthz"); code != http.StatusOK {
					t.Fatalf("probe before request %d: status %d, want 200", i, code)
				}
				switch code := status(t, srv.URL+"/x"); code {
				case http.StatusOK:
					got.WriteByte('o')
				case http.StatusServiceUnavailable:
					got.WriteByte('x')
				default:
					t.Fatalf("request %d: status %d", i, code)
				}
			}
			if got.String() != tc.want {
				t.Errorf("statuses %q, want %q", got.String(), tc.want)
			}
			// The log says which requests failed: a demo counts them there.
			if n, want := strings.Count(logged.String(), "status=503"), strings.Count(tc.want, "x"); n != want {
				t.Errorf("log has %d lines with status=503, want %d:\n%s", n, want, logged.String())
			}
		})
	}
}

func TestServeRejectsNegativeFailEvery(t *testing.T) {
	if err := serve([]string{"-listen", "127.0.0.1:0", "-fail-every", "-1"}); err == nil {
		t.Error("want an error for -fail-every -1")
	}
	if err := serve([]string{"-listen", "127.0.0.1:0", "-shutdown-delay", "-1s"}); err == nil {
		t.Error("want an error for -shutdown-delay -1s")
	}
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestParseHeaderField(t *testing.T) {
	for _, tc := range []struct {
		in, name, value string
		ok              bool
	}{
		{"X-User: alice", "X-User", "alice", true},
		{"X-User:alice", "X-User", "alice", true},
		{"X-Empty:", "X-Empty", "", true},
		{"X-Time: 10:30 ", "X-Time", "10:30", true},
		{"no colon", "", "", false},
		{": v", "", "", false},
		{"Bad Name: v", "", "", false},
		{"X-A: a\r\nX-B: b", "", "", false},
	} {
		name, value, err := parseHeaderField(tc.in)
		if (err == nil) != tc.ok || name != tc.name || value != tc.value {
			t.Errorf("parseHeaderField(%q) = %q, %q, %v; want %q, %q, ok %v", tc.in, name, value, err, tc.name, tc.value, tc.ok)
		}
	}
}

// A field that parses is one an HTTP request can carry as it is: a token
// for a name, and a value without line breaks or surrounding blanks.
func FuzzParseHeaderField(f *testing.F) {
	for _, s := range []string{"X-User: alice", "a:b", ":", "", "X: \r\n", "é: v"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, value, err := parseHeaderField(s)
		if err != nil {
			return
		}
		if name == "" || !strings.HasPrefix(s, name+":") {
			t.Fatalf("name %q is not what precedes the first colon of %q", name, s)
		}
		for _, r := range name {
			if !isTokenChar(r) {
				t.Fatalf("name %q has %q, not a token character", name, r)
			}
		}
		if strings.ContainsAny(value, "\r\n\x00") || strings.Trim(value, " \t") != value {
			t.Fatalf("value %q would not be carried as it is", value)
		}
	})
}

// get sends the -H fields with every request.
func TestGetSendsHeaders(t *testing.T) {
	got := make(chan http.Header, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	defer srv.Close()
	if err := get([]string{srv.URL, "-n", "2", "-H", "X-User: alice", "-H", "X-User: bob"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if h := <-got; !slices.Equal(h.Values("X-User"), []string{"alice", "bob"}) {
			t.Errorf("X-User = %q, want alice, bob", h.Values("X-User"))
		}
	}
}
