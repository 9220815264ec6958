package ca

import (
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ServingCertificates is istiod-lite's own serving certificate, kept
// fresh: once half of its life has passed, the next TLS handshake gets a
// newly issued one. If issuing fails, the current one is served while it
// is still valid, and issuing is tried again on later handshakes.
type ServingCertificates struct {
	m        *Material
	dnsNames []string
	id       spiffeid.ID
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
}

// NewServingCertificates issues the first serving certificate for
// dnsNames (and id, if set), valid for ttl at most.
func (m *Material) NewServingCertificates(dnsNames []string, id spiffeid.ID, ttl time.Duration, log *slog.Logger) (*ServingCertificates, error) {
	s := &ServingCertificates{m: m, dnsNames: dnsNames, id: id, ttl: ttl, log: log, now: time.Now}
	if err := s.renew(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *ServingCertificates) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); !now.Before(s.renewAt) {
		if err := s.renew(); err != nil {
			s.log.Error("renewing the serving certificate; serving the current one", "err", err, "expires", s.cur.Leaf.NotAfter)
		}
	}
	return s.cur, nil
}

// renew issues a certificate and schedules its renewal at half-life. The
// caller holds s.mu (or is the constructor).
func (s *ServingCertificates) renew() error {
	c, err := s.m.ServingCertificate(s.dnsNames, s.id, s.ttl)
	if err != nil {
		return err
	}
	// From now, not NotBefore, which is backdated for clock skew.
	notBefore := s.now()
	s.cur = c
	s.renewAt = notBefore.Add(c.Leaf.NotAfter.Sub(notBefore) / 2)
	return nil
}
