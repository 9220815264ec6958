package xdsserver

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
)

// A response is sent pre-encoded: its header fields, then the shared
// encodings of its resources, as one gRPC message made of many buffers. A
// full state for 100 clients is thus never re-encoded or copied per client.
type encodedResponse struct {
	parts mem.BufferSlice
}

// resourcesField is DeltaDiscoveryResponse.resources.
const resourcesField = 2

func encodeResource(typeURL string, r index.Resource) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.Resource{
		Name: r.Name, Version: r.Version, Resource: &anypb.Any{TypeUrl: typeURL, Value: r.Bytes},
	})
	if err != nil {
		return nil, err
	}
	out := protowire.AppendTag(make([]byte, 0, len(b)+8), resourcesField, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(b)))
	return append(out, b...), nil
}

func encodeResponse(d *delta, nonce, version string) (*encodedResponse, error) {
	head, err := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{
		TypeUrl: d.typeURL, Nonce: nonce, SystemVersionInfo: version, RemovedResources: d.removed,
	})
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	parts := make(mem.BufferSlice, 0, len(d.entries)+1)
	parts = append(parts, mem.SliceBuffer(head))
	for _, e := range d.entries {
		parts = append(parts, e.wire)
	}
	return &encodedResponse{parts: parts}, nil
}

// Codec is the gRPC codec istiod-lite's server uses: protobuf, plus
// pre-encoded responses. Install it with grpc.ForceServerCodecV2.
type Codec struct{}

var protoCodec = encoding.GetCodecV2("proto")

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*encodedResponse); ok {
		return r.parts, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

// Name implements encoding.CodecV2: it replaces the default "proto" codec.
func (Codec) Name() string { return "proto" }
