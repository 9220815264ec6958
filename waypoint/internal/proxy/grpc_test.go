package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// healthBackend is a gRPC server whose answers depend on the service
// asked about, with header and trailer metadata on each.
type healthBackend struct {
	healthpb.UnimplementedHealthServer
}

func (healthBackend) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-backend-header", "h-"+req.Service))
	switch req.Service {
	case "ok":
		grpc.SetTrailer(ctx, metadata.Pairs("x-custom-trailer", "t-ok"))
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case "denied":
		grpc.SetTrailer(ctx, metadata.Pairs("x-custom-trailer", "t-denied"))
		return nil, status.Error(codes.PermissionDenied, "not you: ü") // a message that needs percent-encoding
	default:
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.Service)
	}
}

func (healthBackend) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	for i := range 5 {
		st := healthpb.HealthCheckResponse_SERVING
		if i%2 == 1 {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-custom-trailer", "t-watch"))
	return status.Error(codes.Aborted, "stream over")
}

// startGRPCEndpoint serves healthBackend on addr (h2c), behind a
// destination ztunnel on its IP.
func (m *testMesh) startGRPCEndpoint(name, addr, sa string) {
	m.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		m.t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, healthBackend{})
	go srv.Serve(ln)
	m.t.Cleanup(srv.Stop)
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	m.startZtunnel(name, ap.Addr(), sa, nil)
}

// grpcClient is a grpc-go client whose connections are tunnels through
// the waypoint.
func (m *testMesh) grpcClient(target string) *grpc.ClientConn {
	m.t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return m.tunnel(ctx, addr) }),
	)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { cc.Close() })
	return cc
}

// gRPC through the waypoint, to a grpc-go server: status codes, messages,
// header and trailer metadata arrive end to end, for a port declared grpc
// and for one whose protocol is detected; a server-streaming call streams.
func TestGRPC(t *testing.T) {
	for i, appProtocol := range []string{"grpc", ""} {
		t.Run("appProtocol="+appProtocol, func(t *testing.T) {
			const vip = "10.96.3.10"
			addr := fmt.Sprintf("127.77.23.%d:8080", i+1)
			st := meshstate.Config{Services: []*meshstate.Service{service("greeter", vip, 80, 8080)}, Workloads: []*meshstate.Workload{
				workload("greeter-0", addr, "greeter", hostname("greeter"), 80),
			}}
			svc := wpService("greeter", vip, 80, 8080, appProtocol)
			svc.Ports[0].Name = "grpc"
			if appProtocol == "" {
				svc.Ports[0].Name = "port"
			}
			m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}}, st, meshOptions{})
			m.startGRPCEndpoint("greeter-0", addr, "greeter")
			client := healthpb.NewHealthClient(m.grpcClient(vip + ":80"))
			ctx := t.Context()

			for _, tc := range []struct {
				service  string
				code     codes.Code
				msg      string
				trailer  string
				metadata bool // trailers-only answers carry no header metadata
			}{
				{"ok", codes.OK, "", "t-ok", true},
				{"denied", codes.PermissionDenied, "not you: ü", "t-denied", true},
				{"nope", codes.NotFound, `unknown service "nope"`, "", false},
			} {
				var header, trailer metadata.MD
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: tc.service}, grpc.Header(&header), grpc.Trailer(&trailer))
				st := status.Convert(err)
				if st.Code() != tc.code || st.Message() != tc.msg {
					t.Errorf("%s: status %v %q, want %v %q", tc.service, st.Code(), st.Message(), tc.code, tc.msg)
				}
				if tc.code == codes.OK && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("%s: response %v", tc.service, resp)
				}
				if got := first(trailer["x-custom-trailer"]); got != tc.trailer {
					t.Errorf("%s: trailer x-custom-trailer %q, want %q (trailer %v)", tc.service, got, tc.trailer, trailer)
				}
				if got := first(header["x-backend-header"]); tc.metadata && got != "h-"+tc.service {
					t.Errorf("%s: header x-backend-header %q (header %v)", tc.service, got, header)
				}
			}

			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "w"})
			if err != nil {
				t.Fatal(err)
			}
			var got []healthpb.HealthCheckResponse_ServingStatus
			for {
				r, err := stream.Recv()
				if err == io.EOF {
					t.Fatal("stream ended without its status")
				}
				if err != nil {
					if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "stream over" {
						t.Errorf("stream status %v %q, want Aborted", st.Code(), st.Message())
					}
					break
				}
				got = append(got, r.Status)
			}
			if len(got) != 5 || got[0] != healthpb.HealthCheckResponse_SERVING || got[1] != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("stream messages %v, want 5 alternating", got)
			}
			if tr := stream.Trailer(); first(tr["x-custom-trailer"]) != "t-watch" {
				t.Errorf("stream trailer %v", tr)
			}

			// istio_requests_total counts gRPC requests with their status.
			s := m.scrape()
			for _, code := range []string{"0", "7", "5", "10"} {
				if _, ok := metricValue(s, "istio_requests_total", `grpc_response_status="`+code+`"`, `request_protocol="grpc"`, `reporter="waypoint"`); !ok {
					t.Errorf("no istio_requests_total series with grpc_response_status=%q:\n%s", code, grepLines(s, "istio_requests_total"))
				}
			}
		})
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
