package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/xds/internal/discoveryapi"
)

// Resource is one named, versioned resource of a Delta.
type Resource struct {
	Name    string
	Version string
	// Body holds the resource; decode it with Body.UnmarshalTo. It shares
	// memory with the whole response it came in, so keep what it decodes
	// to, not Body itself.
	Body *anypb.Any
}

// Delta is one response for one type: what changed since the last accepted
// state of that type.
type Delta struct {
	TypeURL string
	Updated []Resource
	Removed []string
}

// Subscription is one resource type the client asks for.
type Subscription struct {
	TypeURL string
	// Names are the resources wanted; empty means all of them (wildcard).
	Names []string
	// Apply validates and applies a delta. An error rejects it (NACK): the
	// client's state for the type stays as it was, and Apply must leave
	// whatever it feeds unchanged too. Calls for one client are serialised.
	Apply func(Delta) error
}

// ClientOptions configures NewClient.
type ClientOptions struct {
	// Address is the server's host:port (istiod-lite: 15012).
	Address string
	// NodeID and NodeMetadata identify the client to the server (Envoy's
	// node.id and node.metadata, e.g. "ztunnel~<node>" and NODE_NAME).
	NodeID       string
	NodeMetadata map[string]string
	// Subscriptions are the types to receive; at least one is required.
	Subscriptions []Subscription

	// TokenFile holds the service-account token sent as bearer credentials.
	TokenFile string
	// Transport, if set, is used as is. Otherwise TLS verifying the server as
	// ServerName (default caclient.DefaultServerName) against Roots, or the
	// certificates in RootCertFile.
	Transport    credentials.TransportCredentials
	Roots        *x509.CertPool
	RootCertFile string
	ServerName   string

	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// reconnection attempts (defaults 500ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// MaxMessageSize bounds one response (default 256 MiB: a full state of
	// a large cluster comes in one response).
	MaxMessageSize int
	Logger         *slog.Logger
	DialOptions    []grpc.DialOption
}

// Client is a delta ADS client. Run drives it; Versions reads what it
// accepted.
type Client struct {
	opts ClientOptions
	node *discoveryapi.Node
	conn *grpc.ClientConn
	log  *slog.Logger

	mu sync.Mutex
	// state holds, per type, the version of every resource accepted (not
	// its body: the subscriptions keep what they decoded).
	state  map[string]map[string]string
	synced map[string]bool
	// missing, per type not yet synced, names of rejected responses that
	// no accepted response has carried since: the state is not complete
	// until it is empty.
	missing map[string]map[string]bool
	ready   chan struct{}
}

// NewClient returns a client; it connects when Run is called.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("xds: Address is required")
	}
	if len(opts.Subscriptions) == 0 {
		return nil, errors.New("xds: at least one subscription is required")
	}
	seen := map[string]bool{}
	for _, s := range opts.Subscriptions {
		if s.TypeURL == "" || s.Apply == nil {
			return nil, errors.New("xds: a subscription needs a TypeURL and Apply")
		}
		if seen[s.TypeURL] {
			return nil, fmt.Errorf("xds: %s subscribed twice", s.TypeURL)
		}
		seen[s.TypeURL] = true
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = 256 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	creds := opts.Transport
	if creds == nil {
		roots := opts.Roots
		if roots == nil {
			if opts.RootCertFile == "" {
				return nil, errors.New("xds: Transport, Roots or RootCertFile is required")
			}
			data, err := os.ReadFile(opts.RootCertFile)
			if err != nil {
				return nil, fmt.Errorf("xds: read roots: %w", err)
			}
			certs, err := identity.ParseCertificatesPEM(data)
			if err != nil {
				return nil, fmt.Errorf("xds: roots %s: %w", opts.RootCertFile, err)
			}
			roots = x509.NewCertPool()
			for _, c := range certs {
				roots.AddCert(c)
			}
		}
		name := opts.ServerName
		if name == "" {
			name = caclient.DefaultServerName
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		caclient.ConnectParams(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageSize), grpc.ForceCodecV2(clientCodec{})),
		// A full state arrives as one large message; a large fixed window
		// lets it stream at once instead of waiting for window growth.
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(8 << 20),
	}
	if opts.TokenFile != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(caclient.TokenFile(opts.TokenFile)))
	}
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(opts.Address, dial...)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	c := &Client{
		opts:    opts,
		node:    node(opts.NodeID, opts.NodeMetadata),
		conn:    conn,
		log:     opts.Logger.With("xds_server", opts.Address),
		state:   map[string]map[string]string{},
		synced:  map[string]bool{},
		missing: map[string]map[string]bool{},
		ready:   make(chan struct{}),
	}
	for _, s := range opts.Subscriptions {
		c.state[s.TypeURL] = map[string]string{}
	}
	return c, nil
}

// node is the Node sent with a stream's first request.
func node(id string, metadata map[string]string) *discoveryapi.Node {
	n := &discoveryapi.Node{Id: id}
	if len(metadata) > 0 {
		n.Metadata = &structpb.Struct{Fields: make(map[string]*structpb.Value, len(metadata))}
		for k, v := range metadata {
			n.Metadata.Fields[k] = structpb.NewStringValue(v)
		}
	}
	return n
}

// Ready is closed once every subscription holds a complete state: it
// accepted the first response of a stream (the server's whole answer to the
// subscription), or, after rejecting that, accepted later responses carrying
// every resource the rejected ones held (a server resends what a client
// rejected with its next change). It stays closed across reconnections: the
// last state remains in force.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Versions returns the name and version of every accepted resource of one
// type, or nil if there are none.
func (c *Client) Versions(typeURL string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.state[typeURL]) == 0 {
		return nil
	}
	return maps.Clone(c.state[typeURL])
}

// Run connects and processes responses until ctx is done, reconnecting with
// backoff after every failure. It closes the connection and returns nil
// when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	defer c.conn.Close()
	failures := 0
	for {
		progressed, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			failures = 0
		}
		failures++
		d := backoff(c.opts.MinBackoff, c.opts.MaxBackoff, failures)
		c.log.Warn("xds stream ended; reconnecting", "err", err, "backoff", d)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// backoff is full-jitter exponential: a random delay in [d/2, d], where d
// doubles per failure from min up to max.
func backoff(minD, maxD time.Duration, failures int) time.Duration {
	d := minD
	for i := 1; i < failures && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + rand.N(d/2+1)
}

// deltaADS is Envoy's AggregatedDiscoveryService.DeltaAggregatedResources,
// declared by hand so that the client needs only the messages it sends and
// receives (discoveryapi), not go-control-plane's generated service.
var deltaADS = grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}

const deltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// session runs one stream. progressed reports whether any response arrived.
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.conn.NewStream(ctx, &deltaADS, deltaADSMethod)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	subs := map[string]Subscription{}
	// first holds the types whose first response of this stream is due.
	first := map[string]bool{}
	for i, s := range c.opts.Subscriptions {
		subs[s.TypeURL] = s
		first[s.TypeURL] = true
		req := &discoveryapi.DeltaDiscoveryRequest{
			TypeUrl:                 s.TypeURL,
			ResourceNamesSubscribe:  s.Names,
			InitialResourceVersions: c.Versions(s.TypeURL),
		}
		if len(s.Names) == 0 {
			req.ResourceNamesSubscribe = []string{"*"}
		}
		if i == 0 {
			req.Node = c.node
		}
		if err := stream.SendMsg(req); err != nil {
			return false, fmt.Errorf("subscribe %s: %w", s.TypeURL, sendError(stream, err))
		}
	}
	for {
		resp := &discoveryapi.DeltaDiscoveryResponse{}
		if err := stream.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			return progressed, err
		}
		progressed = true
		ack := &discoveryapi.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		sub, ok := subs[resp.GetTypeUrl()]
		if !ok {
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: "type not subscribed: " + resp.GetTypeUrl()}
		} else {
			err := c.apply(sub, resp)
			if err != nil {
				c.log.Warn("xds response rejected", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce(), "err", err)
				ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			}
			c.track(resp, first[sub.TypeURL], err == nil)
			delete(first, sub.TypeURL)
		}
		if err := stream.SendMsg(ack); err != nil {
			return progressed, fmt.Errorf("ack: %w", sendError(stream, err))
		}
	}
}

// sendError is the reason a send on stream failed. A stream the server
// ended (a refusal, say: too many streams, permission denied) fails sends
// with io.EOF, and its status comes with the next receive.
func sendError(stream grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if rerr := stream.RecvMsg(&discoveryapi.DeltaDiscoveryResponse{}); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return errors.New("server closed the stream")
}

// apply checks a response, hands it to the subscription, and records it.
func (c *Client) apply(sub Subscription, resp *discoveryapi.DeltaDiscoveryResponse) error {
	d := Delta{TypeURL: resp.GetTypeUrl(), Removed: resp.GetRemovedResources(), Updated: make([]Resource, 0, len(resp.GetResources()))}
	names := make(map[string]bool, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		if r.GetName() == "" {
			return errors.New("resource without a name")
		}
		if names[r.GetName()] {
			return fmt.Errorf("resource %q sent twice", r.GetName())
		}
		names[r.GetName()] = true
		body := r.GetResource()
		if body == nil {
			return fmt.Errorf("resource %q has no body", r.GetName())
		}
		if body.GetTypeUrl() != resp.GetTypeUrl() {
			return fmt.Errorf("resource %q is a %s in a %s response", r.GetName(), body.GetTypeUrl(), resp.GetTypeUrl())
		}
		// The decoder's strings share one copy of the response: a name a
		// subscription or the state keeps must not keep all of it.
		d.Updated = append(d.Updated, Resource{Name: strings.Clone(r.GetName()), Version: r.GetVersion(), Body: body})
	}
	if err := sub.Apply(d); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state[d.TypeURL]
	if len(st) == 0 && len(d.Updated) > 0 {
		st = make(map[string]string, len(d.Updated))
		c.state[d.TypeURL] = st
	}
	for _, name := range d.Removed {
		delete(st, name)
	}
	for _, r := range d.Updated {
		st[r.Name] = strings.Clone(r.Version)
	}
	return nil
}

// track records whether a response completes the state of its type. A
// stream's first response is complete by itself; when it (or a later one)
// is rejected, the state lacks what the rejected response held until
// accepted responses have carried each of those names again (updated or
// removed).
func (c *Client) track(resp *discoveryapi.DeltaDiscoveryResponse, first, accepted bool) {
	typeURL := resp.GetTypeUrl()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced[typeURL] {
		return
	}
	missing := c.missing[typeURL]
	if first || missing == nil {
		missing = map[string]bool{} // a first response is a whole answer: older gaps are filled or moot
	}
	mark := func(name string) {
		if accepted {
			delete(missing, name)
		} else {
			missing[strings.Clone(name)] = true // not the whole response
		}
	}
	for _, r := range resp.GetResources() {
		mark(r.GetName())
	}
	for _, n := range resp.GetRemovedResources() {
		mark(n)
	}
	if !accepted || len(missing) > 0 {
		c.missing[typeURL] = missing
		return
	}
	delete(c.missing, typeURL)
	c.synced[typeURL] = true
	if len(c.synced) == len(c.opts.Subscriptions) {
		close(c.ready)
	}
}
