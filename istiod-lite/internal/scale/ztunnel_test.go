package scale

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/meshstate/xdssource"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/xdstest"
)

// ztunnel is a subscriber made as ztunnel makes its own: pkg/xds's client,
// subscribed to every address and policy, feeding the mesh-state store
// through xdssource (or, for a subscriber that only watches what is pushed,
// nothing). It records each delta it receives, and the size of each
// response on the wire.
type ztunnel struct {
	client *xds.Client
	store  *meshstate.Store // nil: the deltas are only recorded
	// addresses holds the bodies of the addresses, if store is nil.
	addresses xdstest.Bodies

	mu         sync.Mutex
	deliveries []delivery
	responses  []response
	rejected   []string
	arrived    chan struct{} // signalled at each delivery
}

// delivery is one delta as the client received it.
type delivery struct {
	at      time.Time // when the client had decoded it (before applying it)
	applied time.Time // when the store held it
	typeURL string
	updated []string
	removed []string
}

// response is one DeltaDiscoveryResponse as it came off the wire.
type response struct {
	typeURL   string
	resources int
	bytes     int
}

// connectZtunnel starts a ztunnel subscriber; it stops when the test ends.
// With withStore, the deltas are applied to a mesh-state store as ztunnel
// applies them; without, only recorded: a ztunnel's store rebuilds its
// indexes at each delta, which costs the test process more than
// istiod-lite while the cluster is loaded.
func connectZtunnel(t *testing.T, addr string, roots *x509.CertPool, tokenFile string, withStore bool) *ztunnel {
	t.Helper()
	z := &ztunnel{arrived: make(chan struct{}, 1)}
	subs := []xds.Subscription{
		{TypeURL: xds.AddressType, Apply: z.addresses.Apply},
		{TypeURL: xds.AuthorizationType, Apply: func(xds.Delta) error { return nil }},
	}
	var src *xdssource.Source
	if withStore {
		z.store = meshstate.NewStore("istio-system", "cluster.local")
		src = xdssource.New(z.store)
		subs = src.Subscriptions()
	}
	for i := range subs {
		apply := subs[i].Apply
		subs[i].Apply = func(d xds.Delta) error {
			at := time.Now()
			err := apply(d)
			z.record(d, at, err)
			return err
		}
	}
	c, err := xds.NewClient(xds.ClientOptions{
		Address: addr, Roots: roots, TokenFile: tokenFile, Subscriptions: subs,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		DialOptions: []grpc.DialOption{grpc.WithStatsHandler(sizes{z})},
	})
	if err != nil {
		t.Fatal(err)
	}
	z.client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	if src != nil {
		go func() { _ = src.Run(ctx, c.Ready()) }()
	}
	t.Cleanup(func() { cancel(); <-done })
	return z
}

func (z *ztunnel) record(d xds.Delta, at time.Time, err error) {
	dl := delivery{at: at, applied: time.Now(), typeURL: d.TypeURL, removed: slices.Clone(d.Removed)}
	for _, r := range d.Updated {
		dl.updated = append(dl.updated, r.Name)
	}
	z.mu.Lock()
	z.deliveries = append(z.deliveries, dl)
	if err != nil {
		z.rejected = append(z.rejected, fmt.Sprintf("%s: %v", shortType(d.TypeURL), err))
	}
	z.mu.Unlock()
	select {
	case z.arrived <- struct{}{}:
	default:
	}
}

// mark returns the number of deliveries so far, for since.
func (z *ztunnel) mark() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return len(z.deliveries)
}

// since returns the deliveries from position i on.
func (z *ztunnel) since(i int) []delivery {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Clone(z.deliveries[i:])
}

// rejections returns what the client rejected (NACKed) and why.
func (z *ztunnel) rejections() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Clone(z.rejected)
}

// firstResponses returns the first response of each type: the full push.
func (z *ztunnel) firstResponses() map[string]response {
	z.mu.Lock()
	defer z.mu.Unlock()
	out := map[string]response{}
	for _, r := range z.responses {
		if _, ok := out[r.typeURL]; !ok {
			out[r.typeURL] = r
		}
	}
	return out
}

// sizes is a gRPC stats handler that records the responses' sizes.
type sizes struct{ z *ztunnel }

func (sizes) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (sizes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (sizes) HandleConn(context.Context, stats.ConnStats)                       {}

func (s sizes) HandleRPC(_ context.Context, st stats.RPCStats) {
	in, ok := st.(*stats.InPayload)
	if !ok {
		return
	}
	// The client decodes into pkg/xds's own wire-compatible messages, not
	// go-control-plane's: read the fields by name.
	msg, ok := in.Payload.(proto.Message)
	if !ok {
		return
	}
	m := msg.ProtoReflect()
	fields := m.Descriptor().Fields()
	typeURL, resources := fields.ByName("type_url"), fields.ByName("resources")
	if m.Descriptor().Name() != "DeltaDiscoveryResponse" || typeURL == nil || resources == nil {
		return
	}
	s.z.mu.Lock()
	s.z.responses = append(s.z.responses, response{typeURL: m.Get(typeURL).String(), resources: m.Get(resources).List().Len(), bytes: in.WireLength})
	s.z.mu.Unlock()
}

// want is what one change must send a ztunnel, per type: the names
// updated and the names removed, nothing else.
type want map[string]namesWanted

type namesWanted struct{ updated, removed []string }

// awaitChange waits until the deliveries after position from hold exactly
// w: every name w lists, each once, and no other. It returns the times from
// start until the last of them was received and applied.
func (z *ztunnel) awaitChange(t *testing.T, from int, start time.Time, w want) (received, applied time.Duration) {
	t.Helper()
	pending := map[string]string{} // "type name" → "updated" or "removed"
	for typeURL, n := range w {
		for _, name := range n.updated {
			pending[shortType(typeURL)+" "+name] = "updated"
		}
		for _, name := range n.removed {
			pending[shortType(typeURL)+" "+name] = "removed"
		}
	}
	guard := time.NewTimer(2 * time.Minute) // against a hang, not a timing bound
	defer guard.Stop()
	for len(pending) > 0 {
		for _, d := range z.since(from) {
			from++
			check := func(name, how string) {
				k := shortType(d.typeURL) + " " + name
				if pending[k] != how {
					t.Fatalf("a push after the change carries %s %s, which the change does not explain (still due: %v)", k, how, keys(pending))
				}
				delete(pending, k)
			}
			for _, name := range d.updated {
				check(name, "updated")
			}
			for _, name := range d.removed {
				check(name, "removed")
			}
			received, applied = d.at.Sub(start), d.applied.Sub(start)
		}
		if len(pending) == 0 {
			break
		}
		select {
		case <-z.arrived:
		case <-guard.C:
			t.Fatalf("no push of %v within 2 minutes of the change", keys(pending))
		}
	}
	return received, applied
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// shortType is the last element of a type URL (Address, Authorization).
func shortType(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}
