package main_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// controlPlane is a small delta ADS server and CA standing in for
// istiod-lite (whose server is internal to it): it sends every resource
// of a type when a client subscribes, and pushes updates to every stream.
type controlPlane struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	caapi.UnimplementedIstioCertificateServiceServer
	ca *identity.CA

	mu        sync.Mutex
	resources map[string]map[string]proto.Message // type → name → resource
	version   int
	streams   map[chan string]bool // wakes streams with the changed type
}

func newControlPlane(ca *identity.CA) *controlPlane {
	return &controlPlane{ca: ca, resources: map[string]map[string]proto.Message{}, streams: map[chan string]bool{}}
}

// set replaces one resource (nil removes it) and pushes the change.
func (cp *controlPlane) set(typeURL, name string, m proto.Message) {
	cp.mu.Lock()
	if cp.resources[typeURL] == nil {
		cp.resources[typeURL] = map[string]proto.Message{}
	}
	if m == nil {
		delete(cp.resources[typeURL], name)
	} else {
		cp.resources[typeURL][name] = m
	}
	cp.version++
	for ch := range cp.streams {
		select {
		case ch <- typeURL:
		default:
		}
	}
	cp.mu.Unlock()
}

func (cp *controlPlane) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	wake := make(chan string, 16)
	cp.mu.Lock()
	cp.streams[wake] = true
	cp.mu.Unlock()
	defer func() {
		cp.mu.Lock()
		delete(cp.streams, wake)
		cp.mu.Unlock()
	}()
	reqs := make(chan *discoveryv3.DeltaDiscoveryRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			reqs <- r
		}
	}()
	sent := map[string]map[string]bool{} // what this client holds, per type
	send := func(typeURL string) error {
		cp.mu.Lock()
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: fmt.Sprint(cp.version), SystemVersionInfo: fmt.Sprint(cp.version)}
		held := sent[typeURL]
		now := map[string]bool{}
		for name, m := range cp.resources[typeURL] {
			a, err := anypb.New(m)
			if err != nil {
				cp.mu.Unlock()
				return err
			}
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: fmt.Sprint(cp.version), Resource: a})
			now[name] = true
		}
		for name := range held {
			if !now[name] {
				resp.RemovedResources = append(resp.RemovedResources, name)
			}
		}
		sent[typeURL] = now
		cp.mu.Unlock()
		return stream.Send(resp)
	}
	for {
		select {
		case err := <-errc:
			return err
		case r := <-reqs:
			if _, ok := sent[r.GetTypeUrl()]; !ok && r.GetResponseNonce() == "" {
				if err := send(r.GetTypeUrl()); err != nil {
					return err
				}
			}
		case typeURL := <-wake:
			if _, ok := sent[typeURL]; ok {
				if err := send(typeURL); err != nil {
					return err
				}
			}
		}
	}
}

func (cp *controlPlane) CreateCertificate(ctx context.Context, req *caapi.IstioCertificateRequest) (*caapi.IstioCertificateResponse, error) {
	v := req.GetMetadata().GetFields()[caclient.ImpersonatedIdentityKey]
	id, err := spiffeid.FromString(v.GetStringValue())
	if err != nil {
		return nil, err
	}
	chain, err := cp.ca.Sign([]byte(req.GetCsr()), id, time.Duration(req.GetValidityDuration())*time.Second)
	if err != nil {
		return nil, err
	}
	resp := &caapi.IstioCertificateResponse{}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, string(identity.EncodeCertificatesPEM([]*x509.Certificate{c})))
	}
	return resp, nil
}

// serve runs the control plane on port 15012 of each node until the
// returned stop is called.
func (cp *controlPlane) serve(t *testing.T, m *mesh, nodes ...*node) (stop func()) {
	t.Helper()
	cert := servingCert(t, m)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, cp)
	caapi.RegisterIstioCertificateServiceServer(srv, cp)
	for _, n := range nodes {
		ln, err := inpodtest.Listen(n.ns.File, "127.0.0.1:15012", inpodtest.SocketOpts{})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
	}
	var once sync.Once
	stop = func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return stop
}

// servingCert is the control plane's certificate for its default name,
// signed by the mesh root.
func servingCert(t *testing.T, m *mesh) tls.Certificate {
	t.Helper()
	keyPEM, err := os.ReadFile(filepath.Join(m.dir, "ca", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := identity.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: caclient.DefaultServerName},
		DNSNames:     []string{caclient.DefaultServerName},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca.Roots()[0], key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func xdsWorkload(name, ip, sa, node string, policies ...string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: "Kubernetes//Pod/default/" + name, Name: name, Namespace: "default", ServiceAccount: sa, Node: node,
		Addresses:             [][]byte{netip.MustParseAddr(ip).AsSlice()},
		TunnelProtocol:        workloadapi.TunnelProtocol_HBONE,
		AuthorizationPolicies: policies,
	}}}
}

// TestXDSModeSurvivesControlPlaneOutage: ztunnels configured over delta
// ADS, with certificates from the control plane's CA, keep carrying
// traffic while the control plane is down and take its pushes again once
// it is back.
func TestXDSModeSurvivesControlPlaneOutage(t *testing.T) {
	m := newMesh(t)
	m.xds = "127.0.0.1:15012"
	if err := os.WriteFile(filepath.Join(m.dir, "token"), []byte("test-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	n1, n2 := m.newNode("n1"), m.newNode("n2")
	link(t, n1, n2, "10.10.0.1", "10.10.0.2")
	cp := newControlPlane(m.ca)
	cp.set(xds.AddressType, "Kubernetes//Pod/default/a", xdsWorkload("a", "10.1.1.2", "sa-a", "n1"))
	cp.set(xds.AddressType, "Kubernetes//Pod/default/b", xdsWorkload("b", "10.2.1.2", "sa-b", "n2", "default/deny-a"))
	stop := cp.serve(t, m, n1, n2)

	a := n1.addPod("a", "10.1.1.2", "sa-a", true)
	b := n2.addPod("b", "10.2.1.2", "sa-b", true)
	b.serveEcho(t, 8080)
	n1.startZtunnel(defaultPorts)
	n2.startZtunnel(defaultPorts)
	if got, err := a.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.1.2" {
		t.Fatalf("a → b: %q, %v", got, err)
	}

	// The control plane goes away: traffic goes on, on the last state and
	// certificates.
	stop()
	for range 3 {
		if got, err := a.greet(t, "10.2.1.2:8080"); err != nil || got != "b 10.1.1.2" {
			t.Fatalf("a → b with the control plane down: %q, %v", got, err)
		}
	}

	// It comes back with a policy denying a: the ztunnels reconnect and
	// apply it.
	cp.set(xds.AuthorizationType, "default/deny-a", &securityapi.Authorization{
		Name: "deny-a", Namespace: "default", Scope: securityapi.Scope_WORKLOAD_SELECTOR, Action: securityapi.Action_DENY,
		Groups: []*securityapi.Group{{Rules: []*securityapi.Rules{{Matches: []*securityapi.Match{{
			Principals: []*securityapi.StringMatch{{MatchType: &securityapi.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/sa-a"}}},
		}}}}}},
	})
	cp.serve(t, m, n1, n2)
	n2.z.waitConfig(t, `"key": "default/deny-a"`)
	if got, err := a.greet(t, "10.2.1.2:8080"); err == nil {
		t.Fatalf("a reached b (%q) after the DENY policy was pushed", got)
	}
	if !strings.Contains(n2.z.logs.String(), "denied by authorization policy default/deny-a") {
		n2.z.waitLog(t, "denied by authorization policy default/deny-a")
	}
}
