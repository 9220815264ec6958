package xds

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoydiscovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiffmesh/skiff/pkg/xds/internal/discoveryapi"
)

// The client's own delta xDS messages (discoveryapi) must be Envoy's on the
// wire: these tests hold them against go-control-plane's.

// envoyName maps each minimal message to the Envoy message it stands for.
var envoyName = map[protoreflect.FullName]protoreflect.FullName{
	"skiff.xds.discovery.Node":                   "envoy.config.core.v3.Node",
	"skiff.xds.discovery.DeltaDiscoveryRequest":  "envoy.service.discovery.v3.DeltaDiscoveryRequest",
	"skiff.xds.discovery.DeltaDiscoveryResponse": "envoy.service.discovery.v3.DeltaDiscoveryResponse",
	"skiff.xds.discovery.Resource":               "envoy.service.discovery.v3.Resource",
}

// TestWireDescriptorsMatchEnvoy checks every field of the minimal messages
// against the Envoy field of the same number: name, kind, cardinality, and
// the message type for message fields (map entries included).
func TestWireDescriptorsMatchEnvoy(t *testing.T) {
	pairs := []struct {
		mine, envoy protoreflect.MessageDescriptor
	}{
		{(&discoveryapi.Node{}).ProtoReflect().Descriptor(), (&corev3.Node{}).ProtoReflect().Descriptor()},
		{(&discoveryapi.DeltaDiscoveryRequest{}).ProtoReflect().Descriptor(), (&envoydiscovery.DeltaDiscoveryRequest{}).ProtoReflect().Descriptor()},
		{(&discoveryapi.DeltaDiscoveryResponse{}).ProtoReflect().Descriptor(), (&envoydiscovery.DeltaDiscoveryResponse{}).ProtoReflect().Descriptor()},
		{(&discoveryapi.Resource{}).ProtoReflect().Descriptor(), (&envoydiscovery.Resource{}).ProtoReflect().Descriptor()},
	}
	if len(pairs) != len(envoyName) {
		t.Fatal("a message of envoyName is not checked")
	}
	// same compares the fields of a minimal message (or map entry) with
	// Envoy's; message fields of other types must be the very same type.
	var same func(path string, mine, envoy protoreflect.MessageDescriptor)
	same = func(path string, mine, envoy protoreflect.MessageDescriptor) {
		fields := mine.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			e := envoy.Fields().ByNumber(f.Number())
			at := path + "." + string(f.Name())
			switch {
			case e == nil:
				t.Errorf("%s = %d: Envoy has no such field", at, f.Number())
				continue
			case e.Name() != f.Name() || e.Kind() != f.Kind() || e.Cardinality() != f.Cardinality() || e.IsMap() != f.IsMap() || e.IsPacked() != f.IsPacked():
				t.Errorf("%s = %d: %v %v, Envoy's is %s %v %v", at, f.Number(), f.Cardinality(), f.Kind(), e.Name(), e.Cardinality(), e.Kind())
				continue
			}
			m := f.Message()
			if m == nil {
				continue
			}
			if want, ok := envoyName[m.FullName()]; ok {
				if want != e.Message().FullName() {
					t.Errorf("%s: %s stands for %s, Envoy's field is a %s", at, m.FullName(), want, e.Message().FullName())
				}
				continue // checked as a pair of its own
			}
			if f.IsMap() {
				same(at, m, e.Message())
			} else if m.FullName() != e.Message().FullName() {
				t.Errorf("%s: %s, Envoy's is %s", at, m.FullName(), e.Message().FullName())
			}
		}
	}
	for _, p := range pairs {
		if envoyName[p.mine.FullName()] != p.envoy.FullName() {
			t.Errorf("%s is checked against %s", p.mine.FullName(), p.envoy.FullName())
		}
		same(string(p.mine.Name()), p.mine, p.envoy)
	}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// TestWireRequestIsEnvoys: a request the client sends, with every field set,
// reads back as the same request with go-control-plane's types, and encodes
// to the same bytes.
func TestWireRequestIsEnvoys(t *testing.T) {
	detail, _ := anypb.New(&structpb.Struct{})
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{"NODE_NAME": structpb.NewStringValue("n1"), "CLUSTER_ID": structpb.NewStringValue("Kubernetes")}}
	mine := &discoveryapi.DeltaDiscoveryRequest{
		Node:                    &discoveryapi.Node{Id: "ztunnel~n1", Metadata: meta},
		TypeUrl:                 AddressType,
		ResourceNamesSubscribe:  []string{"*", "ns/a"},
		InitialResourceVersions: map[string]string{"a": "1", "b": "2"},
		ResponseNonce:           "7",
		ErrorDetail:             &status.Status{Code: 3, Message: "bad", Details: []*anypb.Any{detail}},
	}
	envoy := &envoydiscovery.DeltaDiscoveryRequest{
		Node:                    &corev3.Node{Id: "ztunnel~n1", Metadata: meta},
		TypeUrl:                 AddressType,
		ResourceNamesSubscribe:  []string{"*", "ns/a"},
		InitialResourceVersions: map[string]string{"a": "1", "b": "2"},
		ResponseNonce:           "7",
		ErrorDetail:             &status.Status{Code: 3, Message: "bad", Details: []*anypb.Any{detail}},
	}
	sameWire(t, mine, envoy, &envoydiscovery.DeltaDiscoveryRequest{}, &discoveryapi.DeltaDiscoveryRequest{})
}

// TestWireResponseIsEnvoys: the same for a response, both ways.
func TestWireResponseIsEnvoys(t *testing.T) {
	body := &anypb.Any{TypeUrl: AddressType, Value: []byte{0x0a, 0x00}}
	mine := &discoveryapi.DeltaDiscoveryResponse{
		SystemVersionInfo: "9", TypeUrl: AddressType, Nonce: "9-1", RemovedResources: []string{"gone", "too"},
		Resources: []*discoveryapi.Resource{{Name: "a", Version: "1", Resource: body}, {Name: "b", Version: "2", Resource: body}},
	}
	envoy := &envoydiscovery.DeltaDiscoveryResponse{
		SystemVersionInfo: "9", TypeUrl: AddressType, Nonce: "9-1", RemovedResources: []string{"gone", "too"},
		Resources: []*envoydiscovery.Resource{{Name: "a", Version: "1", Resource: body}, {Name: "b", Version: "2", Resource: body}},
	}
	sameWire(t, mine, envoy, &envoydiscovery.DeltaDiscoveryResponse{}, &discoveryapi.DeltaDiscoveryResponse{})
}

// sameWire checks that mine and envoy, the same message in the two sets of
// types, encode to the same bytes, and that each decodes as the other.
func sameWire(t *testing.T, mine, envoy, envoyOut, mineOut proto.Message) {
	t.Helper()
	mb, err := deterministic.Marshal(mine)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := deterministic.Marshal(envoy)
	if err != nil {
		t.Fatal(err)
	}
	if string(mb) != string(eb) {
		t.Errorf("encodings differ:\nmine  %x\nenvoy %x", mb, eb)
	}
	if err := proto.Unmarshal(mb, envoyOut); err != nil {
		t.Fatalf("go-control-plane cannot read ours: %v", err)
	}
	if !proto.Equal(envoyOut, envoy) || len(envoyOut.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("go-control-plane reads %v\nwant %v", envoyOut, envoy)
	}
	if err := proto.Unmarshal(eb, mineOut); err != nil {
		t.Fatalf("ours cannot read go-control-plane's: %v", err)
	}
	if !proto.Equal(mineOut, mine) || len(mineOut.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("ours reads %v\nwant %v", mineOut, mine)
	}
}

// TestWireKeepsEnvoyOnlyFields: fields the minimal messages leave out
// survive a pass through them (as unknown fields), so nothing a server sends
// is misread as something else.
func TestWireKeepsEnvoyOnlyFields(t *testing.T) {
	resp := &envoydiscovery.DeltaDiscoveryResponse{
		TypeUrl: AddressType, Nonce: "1",
		Resources:            []*envoydiscovery.Resource{{Name: "a", Version: "1", Aliases: []string{"x"}, Ttl: durationpb.New(time.Second), Resource: &anypb.Any{TypeUrl: AddressType}}},
		RemovedResourceNames: []*envoydiscovery.ResourceName{{Name: "gone"}},
		ControlPlane:         &corev3.ControlPlane{Identifier: "istiod-lite"},
	}
	req := &envoydiscovery.DeltaDiscoveryRequest{
		Node:                     &corev3.Node{Id: "n", Cluster: "c", UserAgentName: "skiff", ClientFeatures: []string{"f"}},
		TypeUrl:                  AddressType,
		ResourceNamesUnsubscribe: []string{"old"},
	}
	for _, c := range []struct{ envoy, mine, back proto.Message }{
		{resp, &discoveryapi.DeltaDiscoveryResponse{}, &envoydiscovery.DeltaDiscoveryResponse{}},
		{req, &discoveryapi.DeltaDiscoveryRequest{}, &envoydiscovery.DeltaDiscoveryRequest{}},
	} {
		b, err := proto.Marshal(c.envoy)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(b, c.mine); err != nil {
			t.Fatal(err)
		}
		b, err = proto.Marshal(c.mine)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(b, c.back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(c.back, c.envoy) {
			t.Errorf("through the minimal message %v\nbecomes %v", c.envoy, c.back)
		}
	}
	b, _ := proto.Marshal(resp)
	if got, err := decodeDeltaResponse(b); err != nil || len(got.GetResources()) != 1 || got.GetResources()[0].GetName() != "a" || len(got.GetRemovedResources()) != 0 {
		t.Fatalf("fast decoder: %v, %v", got, err)
	}
}

// nodeServer is go-control-plane's ADS server, reporting the first request
// of a stream and NACKing nothing.
type nodeServer struct {
	envoydiscovery.UnimplementedAggregatedDiscoveryServiceServer
	first chan *envoydiscovery.DeltaDiscoveryRequest
}

func (s *nodeServer) DeltaAggregatedResources(stream envoydiscovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	s.first <- req
	if err := stream.Send(&envoydiscovery.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), Nonce: "1"}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// TestClientNodeReachesEnvoyServer runs the client against go-control-plane's
// generated service (the method path of the hand-written stream) and checks
// that the server reads the node the client was given.
func TestClientNodeReachesEnvoyServer(t *testing.T) {
	srv := &nodeServer{first: make(chan *envoydiscovery.DeltaDiscoveryRequest, 1)}
	c, err := NewClient(ClientOptions{
		Address: serveADS(t, srv), Transport: insecure.NewCredentials(),
		NodeID: "waypoint~shop/wp", NodeMetadata: map[string]string{"WAYPOINT": "shop/wp", "CLUSTER_ID": "Kubernetes"},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Subscriptions: []Subscription{{TypeURL: WaypointType, Names: []string{"shop/wp"}, Apply: func(Delta) error { return nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	var req *envoydiscovery.DeltaDiscoveryRequest
	select {
	case req = <-srv.first:
	case <-time.After(20 * time.Second):
		t.Fatal("no request")
	}
	want := &corev3.Node{Id: "waypoint~shop/wp", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		"WAYPOINT": structpb.NewStringValue("shop/wp"), "CLUSTER_ID": structpb.NewStringValue("Kubernetes"),
	}}}
	if !proto.Equal(req.GetNode(), want) || req.GetTypeUrl() != WaypointType || len(req.GetResourceNamesSubscribe()) != 1 || req.GetResourceNamesSubscribe()[0] != "shop/wp" {
		t.Fatalf("server read %v", req)
	}
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
}
