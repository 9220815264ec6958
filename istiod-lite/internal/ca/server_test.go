package ca

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
)

type fixedAuth struct{ c *auth.Caller }

func (f fixedAuth) FromContext(context.Context) (*auth.Caller, error) { return f.c, nil }

type nodes map[string]bool // "node/ns/sa"

func (n nodes) HasServiceAccountOnNode(node, ns, sa string) bool { return n[node+"/"+ns+"/"+sa] }

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func newServer(t testing.TB, caller *auth.Caller) *Server {
	t.Helper()
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{CA: ca, Auth: fixedAuth{caller}, Nodes: nodes{"n1/app/web": true},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func csrFor(t testing.TB, ns, sa string) string {
	t.Helper()
	key, _ := identity.GenerateKey()
	id, _ := identity.WorkloadID(td, ns, sa)
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return string(csr)
}

func impersonate(ns, sa string) *structpb.Struct {
	id, _ := identity.WorkloadID(td, ns, sa)
	return &structpb.Struct{Fields: map[string]*structpb.Value{caclient.ImpersonatedIdentityKey: structpb.NewStringValue(id.String())}}
}

func TestCreateCertificateRules(t *testing.T) {
	ztunnel := &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel", NodeName: "n1"}
	web := &auth.Caller{Namespace: "app", ServiceAccount: "web"}
	for _, tc := range []struct {
		name   string
		caller *auth.Caller
		req    *caapi.IstioCertificateRequest
		want   codes.Code
	}{
		{"own identity", web, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web")}, codes.OK},
		{"CSR for another identity", web, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "db")}, codes.InvalidArgument},
		{"workload impersonating", web, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "db"), Metadata: impersonate("app", "db")}, codes.PermissionDenied},
		{"ztunnel for a local pod", ztunnel, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), Metadata: impersonate("app", "web")}, codes.OK},
		{"ztunnel for a remote pod", ztunnel, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "db"), Metadata: impersonate("app", "db")}, codes.PermissionDenied},
		{"ztunnel without node", &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), Metadata: impersonate("app", "web")}, codes.PermissionDenied},
		{"foreign trust domain", ztunnel, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{caclient.ImpersonatedIdentityKey: structpb.NewStringValue("spiffe://evil.org/ns/app/sa/web")}}}, codes.PermissionDenied},
		{"garbage impersonation", ztunnel, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{caclient.ImpersonatedIdentityKey: structpb.NewStringValue("::")}}}, codes.InvalidArgument},
		{"empty CSR", web, &caapi.IstioCertificateRequest{}, codes.InvalidArgument},
		{"huge CSR", web, &caapi.IstioCertificateRequest{Csr: strings.Repeat("A", MaxCSRSize+1)}, codes.InvalidArgument},
		{"negative validity", web, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), ValidityDuration: -1}, codes.InvalidArgument},
		{"huge validity is capped", web, &caapi.IstioCertificateRequest{Csr: csrFor(t, "app", "web"), ValidityDuration: 1 << 62}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.caller)
			resp, err := s.CreateCertificate(context.Background(), tc.req)
			if status.Code(err) != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && len(resp.CertChain) < 2 {
				t.Fatalf("chain of %d", len(resp.CertChain))
			}
		})
	}
}

// FuzzCreateCertificate sends arbitrary CSRs and impersonation values: the
// server must refuse bad input with an error, never panic, and never sign
// for an identity other than the caller's.
func FuzzCreateCertificate(f *testing.F) {
	f.Add(csrFor(f, "app", "web"), "")
	f.Add(csrFor(f, "app", "db"), "spiffe://cluster.local/ns/app/sa/db")
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "x")
	s := newServer(f, &auth.Caller{Namespace: "app", ServiceAccount: "web"})
	f.Fuzz(func(t *testing.T, csr, impers string) {
		req := &caapi.IstioCertificateRequest{Csr: csr}
		if impers != "" {
			req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{caclient.ImpersonatedIdentityKey: structpb.NewStringValue(impers)}}
		}
		resp, err := s.CreateCertificate(context.Background(), req)
		if err != nil {
			return
		}
		chain, err := identity.ParseCertificatesPEM([]byte(resp.CertChain[0]))
		if err != nil {
			t.Fatal(err)
		}
		if got := chain[0].URIs[0].String(); got != "spiffe://cluster.local/ns/app/sa/web" {
			t.Fatalf("signed for %s", got)
		}
	})
}

func BenchmarkCreateCertificate(b *testing.B) {
	s := newServer(b, &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel", NodeName: "n1"})
	req := &caapi.IstioCertificateRequest{Csr: csrFor(b, "app", "web"), Metadata: impersonate("app", "web")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.CreateCertificate(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
