package http1_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/http1"
)

// Serve answers the requests of one connection (a tunnel, say) with an
// ordinary handler.
func ExampleServe() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	err = http1.Serve(context.Background(), c, http1.ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello "+r.Host)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	})
	var pe *http1.ProtocolError
	if errors.As(err, &pe) {
		log.Printf("refused a request: %d %s", pe.Status, pe.Reason)
	}
}

// A ClientConn carries one request at a time; a pool reuses it once
// Reusable says so, and may retry elsewhere what failed with
// ErrNoResponse.
func ExampleClientConn() {
	c, err := net.Dial("tcp", "backend:8080")
	if err != nil {
		log.Fatal(err)
	}
	cc := http1.NewClientConn(c, http1.ClientConfig{})
	defer cc.Close()
	req, _ := http.NewRequest("GET", "http://backend:8080/items", nil)
	resp, err := cc.RoundTrip(req)
	if errors.Is(err, http1.ErrNoResponse) {
		log.Print("the backend said nothing: another endpoint may be tried")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) // to the end: the connection is idle again
	resp.Body.Close()
	log.Print(resp.Status, " reusable: ", cc.Reusable())
}
