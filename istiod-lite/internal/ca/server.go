package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
)

// MaxCSRSize bounds the CSR a caller may send.
const MaxCSRSize = 16 << 10

// Authenticator identifies the caller of an RPC.
type Authenticator interface {
	FromContext(ctx context.Context) (*auth.Caller, error)
}

// NodeIndex answers whether a service account has a pod on a node.
type NodeIndex interface {
	HasServiceAccountOnNode(node, namespace, sa string) bool
}

// ServerOptions configures NewServer.
type ServerOptions struct {
	CA    *identity.CA
	Auth  Authenticator
	Nodes NodeIndex
	// Pods finds the node of a caller whose token names its pod but not its
	// node (older apiservers).
	Pods client.Reader
	// NodeAccounts ("<namespace>/<service account>") may ask for other
	// identities with ImpersonatedIdentity (default istio-system/ztunnel).
	NodeAccounts []string
	Logger       *slog.Logger
	Meter        metric.Meter
}

// Server implements istio.v1.auth.IstioCertificateService.
type Server struct {
	caapi.UnimplementedIstioCertificateServiceServer
	o       ServerOptions
	csrs    metric.Int64Counter
	signed  metric.Int64Counter
	denied  metric.Int64Counter
	latency metric.Float64Histogram
}

// NewServer returns the certificate service.
func NewServer(o ServerOptions) (*Server, error) {
	if o.CA == nil || o.Auth == nil || o.Nodes == nil {
		return nil, errors.New("ca: CA, Auth and Nodes are required")
	}
	if o.NodeAccounts == nil {
		o.NodeAccounts = []string{"istio-system/ztunnel"}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Meter == nil {
		o.Meter = noop.NewMeterProvider().Meter("")
	}
	s := &Server{o: o}
	var err error
	if s.csrs, err = o.Meter.Int64Counter("citadel_server_csr_count", metric.WithDescription("Certificate signing requests received")); err != nil {
		return nil, err
	}
	if s.signed, err = o.Meter.Int64Counter("citadel_server_success_cert_issuance_count", metric.WithDescription("Certificates issued")); err != nil {
		return nil, err
	}
	if s.denied, err = o.Meter.Int64Counter("citadel_server_csr_denied_count", metric.WithDescription("Certificate signing requests refused, by reason")); err != nil {
		return nil, err
	}
	if s.latency, err = o.Meter.Float64Histogram("citadel_server_csr_sign_duration", metric.WithUnit("s"), metric.WithDescription("Time to authenticate, authorize and sign a CSR"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)); err != nil {
		return nil, err
	}
	return s, nil
}

// CreateCertificate authenticates the caller, decides which identity it may
// have, and signs the CSR for that identity.
func (s *Server) CreateCertificate(ctx context.Context, req *caapi.IstioCertificateRequest) (*caapi.IstioCertificateResponse, error) {
	start := time.Now()
	s.csrs.Add(ctx, 1)
	resp, reason, err := s.create(ctx, req)
	if err != nil {
		s.denied.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
		s.o.Logger.Info("certificate request refused", "reason", reason, "err", err)
		return nil, err
	}
	s.signed.Add(ctx, 1)
	s.latency.Record(ctx, time.Since(start).Seconds())
	return resp, nil
}

func (s *Server) create(ctx context.Context, req *caapi.IstioCertificateRequest) (*caapi.IstioCertificateResponse, string, error) {
	caller, err := s.o.Auth.FromContext(ctx)
	if err != nil {
		return nil, "unauthenticated", err
	}
	if len(req.GetCsr()) == 0 || len(req.GetCsr()) > MaxCSRSize {
		return nil, "bad_request", status.Errorf(codes.InvalidArgument, "CSR must be 1 to %d bytes", MaxCSRSize)
	}
	if req.GetValidityDuration() < 0 {
		return nil, "bad_request", status.Error(codes.InvalidArgument, "negative validity_duration")
	}
	td := s.o.CA.TrustDomain()
	own, err := identity.WorkloadID(td, caller.Namespace, caller.ServiceAccount)
	if err != nil {
		return nil, "bad_identity", status.Errorf(codes.PermissionDenied, "caller identity: %v", err)
	}
	id := own
	if v := req.GetMetadata().GetFields()[caclient.ImpersonatedIdentityKey]; v != nil {
		requested, err := spiffeid.FromString(v.GetStringValue())
		if err != nil {
			return nil, "bad_request", status.Errorf(codes.InvalidArgument, "ImpersonatedIdentity: %v", err)
		}
		if requested != own {
			if err := s.mayImpersonate(ctx, caller, requested); err != nil {
				return nil, "impersonation_denied", err
			}
			id = requested
		}
	}
	ttl := time.Duration(min(req.GetValidityDuration(), int64(1<<62)/int64(time.Second))) * time.Second
	chain, err := s.o.CA.Sign([]byte(req.GetCsr()), id, ttl)
	if err != nil {
		return nil, "bad_csr", status.Errorf(codes.InvalidArgument, "sign for %s: %v", id, err)
	}
	resp := &caapi.IstioCertificateResponse{CertChain: make([]string, 0, len(chain))}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, string(identity.EncodeCertificatesPEM([]*x509.Certificate{c})))
	}
	return resp, "", nil
}

// mayImpersonate allows a node proxy to obtain id only if a pod running as
// id's service account is on the proxy's own node.
func (s *Server) mayImpersonate(ctx context.Context, caller *auth.Caller, id spiffeid.ID) error {
	if !slices.Contains(s.o.NodeAccounts, caller.Account()) {
		return status.Errorf(codes.PermissionDenied, "%s may not request other identities", caller.Account())
	}
	if id.TrustDomain() != s.o.CA.TrustDomain() {
		return status.Errorf(codes.PermissionDenied, "%s is outside trust domain %s", id, s.o.CA.TrustDomain())
	}
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "ImpersonatedIdentity: %v", err)
	}
	node, err := s.callerNode(ctx, caller)
	if err != nil {
		return err
	}
	if !s.o.Nodes.HasServiceAccountOnNode(node, ns, sa) {
		return status.Errorf(codes.PermissionDenied, "no pod with service account %s/%s on node %s", ns, sa, node)
	}
	return nil
}

// callerNode is the node of the caller's pod: from the token, or from the
// pod the token is bound to.
func (s *Server) callerNode(ctx context.Context, caller *auth.Caller) (string, error) {
	if caller.NodeName != "" {
		return caller.NodeName, nil
	}
	if caller.PodName == "" || s.o.Pods == nil {
		return "", status.Error(codes.PermissionDenied, "impersonation needs a pod-bound token")
	}
	var pod corev1.Pod
	if err := s.o.Pods.Get(ctx, client.ObjectKey{Namespace: caller.Namespace, Name: caller.PodName}, &pod); err != nil {
		return "", status.Errorf(codes.PermissionDenied, "caller's pod: %v", err)
	}
	if string(pod.UID) != caller.PodUID || pod.Spec.NodeName == "" {
		return "", status.Error(codes.PermissionDenied, fmt.Sprintf("caller's pod %s/%s is not the one its token is bound to, or not scheduled", caller.Namespace, caller.PodName))
	}
	return pod.Spec.NodeName, nil
}
