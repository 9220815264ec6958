package xdsserver

import (
	"context"
	"fmt"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// BenchmarkFullState measures serving a full state of 11,000 addresses to
// 10 clients at once (clients decode with pkg/xds's decoder, as ztunnel).
func BenchmarkFullState(b *testing.B) {
	// The 10 clients share one caller; the benchmark opens a stream per
	// client and round, and closed streams may linger a moment.
	e := newEnvWith(b, Options{Auth: fixedAuth{&auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}}, MaxStreamsPerCaller: 1 << 20})
	var res []index.Resource
	for i := range 11000 {
		res = append(res, workload(fmt.Sprintf("Kubernetes//Pod/ns-%d/pod-%d", i/100, i), "0123456789abcdef"))
	}
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: res}})
	conns := make([]*grpc.ClientConn, 10)
	for i := range conns {
		c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)), grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(8<<20))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c).DeltaAggregatedResources(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}})
				r, err := s.Recv()
				if err != nil || len(r.Resources) != len(res) {
					b.Errorf("recv: %v", err)
				}
			})
		}
		wg.Wait()
	}
}
