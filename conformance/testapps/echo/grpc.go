package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/skiffmesh/skiff/conformance/testapps/echo/echopb"
)

type echoServer struct {
	echopb.UnimplementedEchoServer
	log *slog.Logger
}

func (s *echoServer) Echo(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	host, _ := os.Hostname()
	resp := &echopb.EchoResponse{
		Message:   req.GetMessage(),
		Node:      os.Getenv("NODE_NAME"),
		Pod:       os.Getenv("POD_NAME"),
		Namespace: os.Getenv("POD_NAMESPACE"),
		PodIp:     os.Getenv("POD_IP"),
		Hostname:  host,
	}
	if p, ok := peer.FromContext(ctx); ok {
		resp.Remote = p.Addr.String()
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get(":authority"); len(a) > 0 {
			resp.Authority = a[0]
		}
	}
	s.log.Info("grpc", "method", "Echo", "remote", resp.Remote)
	return resp, nil
}

// serveGRPC serves the Echo service on ln in the background.
func serveGRPC(ln net.Listener, log *slog.Logger) *grpc.Server {
	gs := grpc.NewServer()
	echopb.RegisterEchoServer(gs, &echoServer{log: log})
	go func() {
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("grpc serve", "err", err)
		}
	}()
	log.Info("listening", "grpc", ln.Addr().String())
	return gs
}

func grpcCall(args []string) error {
	fs := flag.NewFlagSet("grpc", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of calls")
	timeout := fs.Duration("timeout", 5*time.Second, "per-call timeout")
	msg := fs.String("message", "hello", "message to send")
	var addr string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		addr, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if addr == "" {
		addr = fs.Arg(0)
	}
	if addr == "" {
		return errors.New("grpc: missing address")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("grpc dial %s: %w", addr, err)
	}
	defer conn.Close()
	c := echopb.NewEchoClient(conn)
	for i := 0; i < *n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		r, err := c.Echo(ctx, &echopb.EchoRequest{Message: *msg})
		cancel()
		if err != nil {
			return fmt.Errorf("Echo %s: %w", addr, err)
		}
		fmt.Printf("message=%s\nnode=%s\npod=%s\nnamespace=%s\npod_ip=%s\nhostname=%s\nremote=%s\nauthority=%s\n",
			r.Message, r.Node, r.Pod, r.Namespace, r.PodIp, r.Hostname, r.Remote, r.Authority)
	}
	return nil
}
