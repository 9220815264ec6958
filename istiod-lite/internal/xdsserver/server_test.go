package xdsserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

type fixedAuth struct{ c *auth.Caller }

func (f fixedAuth) FromContext(context.Context) (*auth.Caller, error) { return f.c, nil }

type env struct {
	srv    *Server
	addr   string
	reader *sdkmetric.ManualReader
}

func newEnv(t testing.TB, caller *auth.Caller) *env {
	t.Helper()
	return newEnvWith(t, Options{Auth: fixedAuth{caller}})
}

// newEnvWith serves opts (Meter and Logger are the test's) on loopback.
func newEnvWith(t testing.TB, opts Options) *env {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	opts.Meter, opts.Logger = mp.Meter("test"), slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.ForceServerCodecV2(Codec{}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return &env{srv: srv, addr: lis.Addr().String(), reader: reader}
}

func (e *env) counter(t *testing.T, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

func workload(name, node string) index.Resource {
	msg := &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: name, Name: name, Node: node}}}
	b, _ := proto.Marshal(msg)
	return index.Resource{Name: name, Version: node, Message: msg, Bytes: b}
}

type recorder struct {
	deltas chan xds.Delta
	reject func(xds.Delta) error
}

func (r *recorder) apply(d xds.Delta) error {
	var err error
	if r.reject != nil {
		err = r.reject(d)
	}
	r.deltas <- d
	return err
}

func (r *recorder) next(t *testing.T) xds.Delta {
	t.Helper()
	select {
	case d := <-r.deltas:
		return d
	case <-time.After(20 * time.Second):
		t.Fatal("no delta")
	}
	return xds.Delta{}
}

func runClient(t *testing.T, addr string, subs ...xds.Subscription) *xds.Client {
	t.Helper()
	c, err := xds.NewClient(xds.ClientOptions{
		Address: addr, Transport: insecure.NewCredentials(), Subscriptions: subs,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
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

// names returns the resources' names, sorted.
func names(rs []xds.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// rejectBadVersion rejects a delta updating any resource to version "bad".
func rejectBadVersion(d xds.Delta) error {
	for _, r := range d.Updated {
		if r.Version == "bad" {
			return errors.New("invalid workload")
		}
	}
	return nil
}

func TestNACKedResourcesAreResentAndCounted(t *testing.T) {
	// Resent with the next push only, not on a timer.
	e := newEnvWith(t, Options{Auth: fixedAuth{&auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}}, NACKRetry: time.Hour})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1")}}})
	rec := &recorder{deltas: make(chan xds.Delta, 10), reject: rejectBadVersion}
	c := runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	if got := names(rec.next(t).Updated); len(got) != 1 || got[0] != "a" {
		t.Fatalf("initial: %v", got)
	}
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "bad")}}})
	rec.next(t) // rejected
	waitRejects(t, e, 1)
	// The client still holds a@v1: the next response carries a again, at
	// its current version, beside what changed.
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("b", "v1")}}})
	if got := names(rec.next(t).Updated); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("after NACK: %v, want a (resent) and b", got)
	}
	waitRejects(t, e, 2) // a is still bad
	if st := c.Versions(xds.AddressType); st["a"] != "v1" || len(st) != 1 {
		t.Fatalf("client holds %v after rejecting a@bad, want a@v1 only", st)
	}
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v2")}}})
	if got := names(rec.next(t).Updated); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("after the fix: %v, want a and b (resent)", got)
	}
	if st := c.Versions(xds.AddressType); st["a"] != "v2" || st["b"] != "v1" {
		t.Fatalf("client holds %v, want a@v2 and b@v1", st)
	}
}

// A client that rejects its whole first state is not ready until it holds
// all of it: the server resends what was rejected with the next change.
func TestNACKedInitialStateIsResent(t *testing.T) {
	// Resent with the next push only, not on a timer.
	e := newEnvWith(t, Options{Auth: fixedAuth{&auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}}, NACKRetry: time.Hour})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1"), workload("x", "bad"), workload("y", "v1")}}})
	rec := &recorder{deltas: make(chan xds.Delta, 10), reject: rejectBadVersion}
	c := runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	rec.next(t) // rejected
	waitRejects(t, e, 1)
	// The bad resource goes; an unrelated one arrives.
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("c", "v1")}, Removed: []string{"x"}}})
	d := rec.next(t)
	if got := names(d.Updated); len(got) != 3 || got[0] != "a" || got[1] != "c" || got[2] != "y" || len(d.Removed) != 1 || d.Removed[0] != "x" {
		t.Fatalf("after the NACK: updated %v removed %v, want a, c, y and x removed", got, d.Removed)
	}
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("not ready with a complete state")
	}
	if st := c.Versions(xds.AddressType); len(st) != 3 {
		t.Fatalf("client holds %v, want a, c and y", st)
	}
}

// In a quiet mesh, what a client rejected is sent again after a while:
// a client whose first state was rejected for a passing reason gets ready.
func TestNACKedStateIsRetried(t *testing.T) {
	e := newEnvWith(t, Options{Auth: fixedAuth{&auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}}, NACKRetry: time.Millisecond})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1"), workload("b", "v1")}}})
	first := true
	rec := &recorder{deltas: make(chan xds.Delta, 10), reject: func(xds.Delta) error {
		if first {
			first = false
			return errors.New("not now")
		}
		return nil
	}}
	c := runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	rec.next(t) // rejected
	if got := names(rec.next(t).Updated); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("resent %v, want a and b", got)
	}
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("not ready with a complete state")
	}
}

func TestRetryDelayBacksOff(t *testing.T) {
	for _, tc := range []struct {
		first time.Duration
		n     int
		want  time.Duration
	}{
		{time.Second, 1, time.Second}, {time.Second, 3, 4 * time.Second}, {time.Second, 100, time.Minute},
		{time.Hour, 5, time.Hour},
	} {
		if got := retryDelay(tc.first, tc.n); got != tc.want {
			t.Errorf("retryDelay(%v, %d) = %v, want %v", tc.first, tc.n, got, tc.want)
		}
	}
}

// waitRejects waits until the server has counted n NACKs (they travel
// independently of the pushes).
func waitRejects(t *testing.T, e *env, n int64) {
	t.Helper()
	waitCounter(t, e, "pilot_total_xds_rejects", n)
}

// waitCounter waits until the server's counter name reaches n.
func waitCounter(t *testing.T, e *env, name string, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for e.counter(t, name) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", name, e.counter(t, name), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInitialResourceVersions(t *testing.T) {
	e := newEnv(t, &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("same", "v1"), workload("changed", "v2"), workload("new", "v1")}}})
	// A raw stream, to send initial_resource_versions of our choosing.
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:                 xds.AddressType,
		ResourceNamesSubscribe:  []string{"*"},
		InitialResourceVersions: map[string]string{"same": "v1", "changed": "v1", "gone": "v1"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.GetResources() {
		got[r.GetName()] = r.GetVersion()
	}
	if len(got) != 2 || got["changed"] != "v2" || got["new"] != "v1" {
		t.Errorf("resent %v, want only changed@v2 and new@v1", got)
	}
	if rm := resp.GetRemovedResources(); len(rm) != 1 || rm[0] != "gone" {
		t.Errorf("removed %v, want [gone]", rm)
	}
}

func TestUnknownTypeIsRefused(t *testing.T) {
	e := newEnv(t, &auth.Caller{Namespace: "ns", ServiceAccount: "sa"})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/nope"})
	if _, err := stream.Recv(); err == nil {
		t.Fatal("unknown type accepted")
	}
}

func TestNamedSubscriptionsAndAccess(t *testing.T) {
	// A waypoint's account may see its own configuration only.
	e := newEnv(t, &auth.Caller{Namespace: "shop", ServiceAccount: "wp"})
	res := func(name string) index.Resource { r := workload(name, "v1"); return r }
	e.srv.Push([]index.Update{{TypeURL: xds.WaypointType, Upserted: []index.Resource{res("shop/wp"), res("shop/other")}}})
	rec := &recorder{deltas: make(chan xds.Delta, 10)}
	c := runClient(t, e.addr, xds.Subscription{TypeURL: xds.WaypointType, Names: []string{"shop/wp", "shop/other", "shop/missing"}, Apply: rec.apply})
	d := rec.next(t)
	if got := names(d.Updated); len(got) != 1 || got[0] != "shop/wp" {
		t.Fatalf("updated %v, want only shop/wp", got)
	}
	<-c.Ready()
	e.srv.Push([]index.Update{{TypeURL: xds.WaypointType, Removed: []string{"shop/wp"}}})
	if d := rec.next(t); len(d.Removed) != 1 || d.Removed[0] != "shop/wp" {
		t.Fatalf("removal: %+v", d)
	}
}
