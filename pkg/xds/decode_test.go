package xds

import (
	"testing"

	envoydiscovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiffmesh/skiff/pkg/xds/internal/discoveryapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// sampleResponse is a response as Envoy's types encode it, with fields the
// client does not read (aliases, ttl) that the decoders must skip.
func sampleResponse(tb testing.TB, n int) []byte {
	tb.Helper()
	resp := &envoydiscovery.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "1-2", SystemVersionInfo: "7", RemovedResources: []string{"gone"}}
	for i := range n {
		body, _ := anypb.New(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: "u", Name: "p", Addresses: [][]byte{{10, 0, 0, byte(i)}}}}})
		resp.Resources = append(resp.Resources, &envoydiscovery.Resource{Name: "Kubernetes//Pod/ns/p", Version: "abc", Resource: body, Aliases: []string{"x"}, Ttl: durationpb.New(5)})
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// reference decodes with reflection (the codec's path for every other
// message) and keeps only the fields the fast decoder reads.
func reference(b []byte) (*discoveryapi.DeltaDiscoveryResponse, error) {
	var full discoveryapi.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &full); err != nil {
		return nil, err
	}
	out := &discoveryapi.DeltaDiscoveryResponse{TypeUrl: full.TypeUrl, Nonce: full.Nonce, SystemVersionInfo: full.SystemVersionInfo, RemovedResources: full.RemovedResources}
	for _, r := range full.Resources {
		rr := &discoveryapi.Resource{Name: r.Name, Version: r.Version}
		if r.Resource != nil {
			rr.Resource = &anypb.Any{TypeUrl: r.Resource.TypeUrl, Value: r.Resource.Value}
		}
		out.Resources = append(out.Resources, rr)
	}
	return out, nil
}

// referenceEnvoy is reference with go-control-plane's complete message.
func referenceEnvoy(b []byte) (*discoveryapi.DeltaDiscoveryResponse, error) {
	var full envoydiscovery.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &full); err != nil {
		return nil, err
	}
	out := &discoveryapi.DeltaDiscoveryResponse{TypeUrl: full.TypeUrl, Nonce: full.Nonce, SystemVersionInfo: full.SystemVersionInfo, RemovedResources: full.RemovedResources}
	for _, r := range full.Resources {
		rr := &discoveryapi.Resource{Name: r.Name, Version: r.Version}
		if r.Resource != nil {
			rr.Resource = &anypb.Any{TypeUrl: r.Resource.TypeUrl, Value: r.Resource.Value}
		}
		out.Resources = append(out.Resources, rr)
	}
	return out, nil
}

func TestDecodeMatchesReflection(t *testing.T) {
	b := sampleResponse(t, 3)
	got, err := decodeDeltaResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []func([]byte) (*discoveryapi.DeltaDiscoveryResponse, error){reference, referenceEnvoy} {
		want, err := ref(b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got %v\nwant %v", got, want)
		}
	}
}

func TestDecodeRejectsTruncated(t *testing.T) {
	b := sampleResponse(t, 2)
	for _, n := range []int{1, len(b) / 2, len(b) - 1} {
		if _, err := decodeDeltaResponse(b[:n]); err == nil {
			if _, refErr := reference(b[:n]); refErr != nil {
				t.Errorf("truncated to %d bytes: decoded, reflection refuses: %v", n, refErr)
			}
		}
	}
}

// FuzzDecodeDeltaResponse checks the fast decoder against reflection: both
// accept the same inputs (for the fields read) and agree on the result; and
// what go-control-plane's complete message decodes, they decode the same.
func FuzzDecodeDeltaResponse(f *testing.F) {
	f.Add(sampleResponse(f, 2))
	f.Add([]byte{0x12, 0x03, 0x1a, 0x01, 'a'})
	f.Add([]byte{0x12, 0x02, 0x12, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeDeltaResponse(b)
		want, refErr := reference(b)
		if refErr != nil {
			return // the fast decoder may skip a malformed field it does not read
		}
		if err != nil {
			t.Fatalf("reflection decodes, fast decoder fails: %v", err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got %v\nwant %v", got, want)
		}
		if envoy, err := referenceEnvoy(b); err == nil && !proto.Equal(envoy, want) {
			t.Fatalf("go-control-plane decodes %v\nthe minimal message %v", envoy, want)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	data := sampleResponse(b, 10000)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeDeltaResponse(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		for b.Loop() {
			var r discoveryapi.DeltaDiscoveryResponse
			if err := proto.Unmarshal(data, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
