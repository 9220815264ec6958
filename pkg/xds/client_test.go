package xds

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// script is a fake ADS server: it answers each stream's subscription with
// the responses of one step, in order, and reports every request it reads.
type script struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	steps    [][]*discoveryv3.DeltaDiscoveryResponse
	requests chan *discoveryv3.DeltaDiscoveryRequest
	streams  chan int
	n        int
}

func (s *script) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	step := s.n
	s.n++
	s.streams <- step
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	s.requests <- req
	if step >= len(s.steps) {
		<-stream.Context().Done()
		return nil
	}
	for _, r := range s.steps[step] {
		if err := stream.Send(r); err != nil {
			return err
		}
		ack, err := stream.Recv()
		if err != nil {
			return err
		}
		s.requests <- ack
	}
	return nil // end the stream: the client reconnects
}

func res(name, version, typeURL string) *discoveryv3.Resource {
	return &discoveryv3.Resource{Name: name, Version: version, Resource: &anypb.Any{TypeUrl: typeURL, Value: []byte{}}}
}

// serveADS serves srv on a loopback port until the test ends and returns
// its address.
func serveADS(t *testing.T, srv discoveryv3.AggregatedDiscoveryServiceServer) string {
	t.Helper()
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// runClient serves srv on a loopback port and runs, until the test ends, a
// client subscribed to every address that rejects any delta updating the
// resource named reject.
func runClient(t *testing.T, srv discoveryv3.AggregatedDiscoveryServiceServer, reject string) *Client {
	t.Helper()
	c, err := NewClient(ClientOptions{
		Address: serveADS(t, srv), Transport: insecure.NewCredentials(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Subscriptions: []Subscription{{TypeURL: AddressType, Apply: func(d Delta) error {
			for _, r := range d.Updated {
				if r.Name == reject {
					return io.ErrUnexpectedEOF // any error rejects the delta
				}
			}
			return nil
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func TestClientValidatesResumesAndNACKs(t *testing.T) {
	srv := &script{
		requests: make(chan *discoveryv3.DeltaDiscoveryRequest, 100),
		streams:  make(chan int, 10),
		steps: [][]*discoveryv3.DeltaDiscoveryResponse{
			{
				{TypeUrl: AddressType, Nonce: "1", Resources: []*discoveryv3.Resource{res("a", "1", AddressType), res("b", "1", AddressType)}},
				{TypeUrl: AddressType, Nonce: "2", Resources: []*discoveryv3.Resource{res("c", "1", AuthorizationType)}},                       // wrong type
				{TypeUrl: AddressType, Nonce: "3", Resources: []*discoveryv3.Resource{res("d", "1", AddressType), res("d", "2", AddressType)}}, // duplicate
				{TypeUrl: AddressType, Nonce: "4", Resources: []*discoveryv3.Resource{{Name: "e", Version: "1"}}},                              // no body
				{TypeUrl: AddressType, Nonce: "5", Resources: []*discoveryv3.Resource{res("f", "1", AddressType)}},                             // rejected by Apply
			},
			{
				{TypeUrl: AddressType, Nonce: "6", Resources: []*discoveryv3.Resource{res("b", "2", AddressType)}, RemovedResources: []string{"a"}},
			},
		},
	}
	c := runClient(t, srv, "f")

	next := func() *discoveryv3.DeltaDiscoveryRequest {
		select {
		case r := <-srv.requests:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no request")
		}
		return nil
	}
	if first := next(); len(first.ResourceNamesSubscribe) != 1 || first.ResourceNamesSubscribe[0] != "*" || len(first.InitialResourceVersions) != 0 {
		t.Fatalf("first subscription %v", first)
	}
	for _, want := range []struct {
		nonce string
		nack  bool
	}{{"1", false}, {"2", true}, {"3", true}, {"4", true}, {"5", true}} {
		r := next()
		if r.ResponseNonce != want.nonce || (r.ErrorDetail != nil) != want.nack {
			t.Fatalf("reply to %s: nonce %q, error %v; want NACK %v", want.nonce, r.ResponseNonce, r.ErrorDetail, want.nack)
		}
	}
	// The server ends the stream; the client resumes with what it accepted.
	resume := next()
	if v := resume.InitialResourceVersions; len(v) != 2 || v["a"] != "1" || v["b"] != "1" {
		t.Fatalf("resume with %v, want a@1 and b@1", v)
	}
	if ack := next(); ack.ResponseNonce != "6" || ack.ErrorDetail != nil {
		t.Fatalf("reply to 6: %v", ack)
	}
	st := c.Versions(AddressType)
	if len(st) != 1 || st["b"] != "2" {
		t.Fatalf("state %v, want only b@2", st)
	}
}

func TestNewClientErrors(t *testing.T) {
	ok := Subscription{TypeURL: AddressType, Apply: func(Delta) error { return nil }}
	for name, o := range map[string]ClientOptions{
		"no address":              {Transport: insecure.NewCredentials(), Subscriptions: []Subscription{ok}},
		"no subscription":         {Address: "x:1", Transport: insecure.NewCredentials()},
		"twice the same":          {Address: "x:1", Transport: insecure.NewCredentials(), Subscriptions: []Subscription{ok, ok}},
		"no Apply":                {Address: "x:1", Transport: insecure.NewCredentials(), Subscriptions: []Subscription{{TypeURL: AddressType}}},
		"no trust for the server": {Address: "x:1", Subscriptions: []Subscription{ok}},
	} {
		if _, err := NewClient(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// feed is a fake ADS server driven by the test: each response sent on out
// goes to the client's current stream; every request read is reported; a
// value on hangup ends the stream (the client reconnects).
type feed struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	out      chan *discoveryv3.DeltaDiscoveryResponse
	hangup   chan struct{}
	requests chan *discoveryv3.DeltaDiscoveryRequest
}

func (f *feed) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			f.requests <- req
		}
	}()
	for {
		select {
		case r := <-f.out:
			if err := stream.Send(r); err != nil {
				return err
			}
		case <-f.hangup:
			return nil
		case <-stream.Context().Done():
			return nil
		}
	}
}

// A client is ready only once it holds a complete state: not after an
// accepted response that follows a rejected full state, but once what the
// rejected response held has arrived, or a new stream's whole answer has.
func TestReadyOnlyWithACompleteState(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after the rejected first response {a, bad} and an accepted {c}:
		mend []*discoveryv3.DeltaDiscoveryResponse
		// reconnect ends the stream before mend is sent.
		reconnect bool
	}{
		{"resent by the server", []*discoveryv3.DeltaDiscoveryResponse{
			{TypeUrl: AddressType, Nonce: "3", Resources: []*discoveryv3.Resource{res("a", "1", AddressType)}},
			{TypeUrl: AddressType, Nonce: "4", RemovedResources: []string{"bad"}},
		}, false},
		{"a new stream's whole answer", []*discoveryv3.DeltaDiscoveryResponse{
			{TypeUrl: AddressType, Nonce: "5", Resources: []*discoveryv3.Resource{res("a", "1", AddressType), res("c", "1", AddressType)}},
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &feed{out: make(chan *discoveryv3.DeltaDiscoveryResponse), hangup: make(chan struct{}), requests: make(chan *discoveryv3.DeltaDiscoveryRequest, 100)}
			c := runClient(t, f, "bad")
			next := func() *discoveryv3.DeltaDiscoveryRequest {
				t.Helper()
				select {
				case r := <-f.requests:
					return r
				case <-time.After(20 * time.Second):
					t.Fatal("no request")
				}
				return nil
			}
			send := func(r *discoveryv3.DeltaDiscoveryResponse, nack bool) {
				t.Helper()
				f.out <- r
				if ack := next(); ack.ResponseNonce != r.Nonce || (ack.ErrorDetail != nil) != nack {
					t.Fatalf("reply to %s: %v, want NACK %v", r.Nonce, ack, nack)
				}
			}
			notReady := func(when string) {
				t.Helper()
				select {
				case <-c.Ready():
					t.Fatalf("ready %s, holding %v", when, c.Versions(AddressType))
				default:
				}
			}

			next() // subscription
			send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "1", Resources: []*discoveryv3.Resource{res("a", "1", AddressType), res("bad", "1", AddressType)}}, true)
			notReady("after rejecting the whole state")
			send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "2", Resources: []*discoveryv3.Resource{res("c", "1", AddressType)}}, false)
			notReady("after accepting a change that does not complete it")
			if tc.reconnect {
				f.hangup <- struct{}{}
				if r := next(); r.InitialResourceVersions["c"] != "1" {
					t.Fatalf("resumed with %v", r.InitialResourceVersions)
				}
			}
			for i, r := range tc.mend {
				send(r, false)
				if i < len(tc.mend)-1 {
					notReady("with part of the rejected state back")
				}
			}
			select {
			case <-c.Ready():
			default:
				t.Fatal("not ready with a complete state")
			}
			if st := c.Versions(AddressType); len(st) != 2 || st["a"] != "1" || st["c"] != "1" {
				t.Fatalf("state %v, want a and c", st)
			}
		})
	}
}

// refuser refuses every stream before reading it, as a server over its
// per-caller stream limit does.
type refuser struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
}

func (refuser) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.ResourceExhausted, "stream limit 2 reached")
}

// A refused stream reports the server's reason, whether the refusal
// reaches the client before or after it sends its subscription.
func TestSessionReportsRefusal(t *testing.T) {
	c, err := NewClient(ClientOptions{
		Address: serveADS(t, refuser{}), Transport: insecure.NewCredentials(),
		Logger:        slog.New(slog.DiscardHandler),
		Subscriptions: []Subscription{{TypeURL: AddressType, Apply: func(Delta) error { return nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	for range 20 {
		_, err := c.session(t.Context())
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "stream limit 2") {
			t.Fatalf("session: %v; want the server's ResourceExhausted and its reason", err)
		}
	}
}
