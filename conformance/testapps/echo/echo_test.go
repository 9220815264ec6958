package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
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
