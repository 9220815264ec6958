package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// newTestManager returns a manager over a local CA, both on clock.
func newTestManager(t *testing.T, clock *fakeClock) (*Manager, *testClient, *CA) {
	t.Helper()
	ca := mustCA(t, clock)
	client := &testClient{next: ca.Client()}
	m := NewManager(client, ManagerOptions{Now: clock.Now, TTL: 24 * time.Hour, Logger: testLogger(t)})
	return m, client, ca
}

func TestManagerGetFetchesAndCaches(t *testing.T) {
	clock := newFakeClock()
	m, client, ca := newTestManager(t, clock)
	id := mustID(t, "default", "web")
	ctx := context.Background()

	cert, err := m.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get() error: %v", err)
	}
	if cert.ID != id || cert.TLS.Leaf != cert.Leaf || cert.Leaf == nil {
		t.Fatalf("Get() returned an inconsistent certificate: %+v", cert)
	}
	if len(cert.TLS.Certificate) != len(cert.Chain) || len(cert.Chain) != 2 {
		t.Fatalf("TLS chain has %d certificates, want leaf and root", len(cert.TLS.Certificate))
	}
	if !publicKeyEqual(cert.Leaf.PublicKey, cert.TLS.PrivateKey.(crypto.Signer).Public()) {
		t.Fatal("private key does not match the leaf")
	}
	if _, _, err := x509svid.Verify(cert.Chain, NewBundles(ca.Bundle()), x509svid.WithTime(clock.Now())); err != nil {
		t.Fatalf("certificate does not verify: %v", err)
	}
	if got, want := cert.NotAfter, clock.Now().Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}

	again, err := m.Get(ctx, id)
	if err != nil || again != cert {
		t.Fatalf("second Get() = %p, %v; want the cached %p", again, err, cert)
	}
	if n := client.calls.Load(); n != 1 {
		t.Fatalf("CA called %d times, want 1", n)
	}
	if _, err := m.Get(ctx, spiffeid.ID{}); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Get(zero ID) error = %v, want ErrInvalidID", err)
	}
}

func TestManagerGetDeduplicates(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	client.gate = make(chan struct{})
	id := mustID(t, "default", "web")

	const n = 16
	certs := make([]*Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { certs[i], errs[i] = m.Get(context.Background(), id) })
	}
	// Hold the CA until every caller has joined the one flight.
	for m.waiters(id) < n {
		runtime.Gosched()
	}
	close(client.gate)
	wg.Wait()

	for i := range n {
		if errs[i] != nil || certs[i] != certs[0] {
			t.Fatalf("Get() #%d = %p, %v; want %p", i, certs[i], errs[i], certs[0])
		}
	}
	if got := client.calls.Load(); got != 1 {
		t.Fatalf("CA called %d times, want 1", got)
	}
}

// waiters returns how many callers wait on id's flight.
func (m *Manager) waiters(id spiffeid.ID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.flights[id]; f != nil {
		return f.waiters
	}
	return 0
}

func TestManagerGetHonoursCancellation(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	client.started = make(chan struct{}, 2)
	client.gate = make(chan struct{})
	id := mustID(t, "default", "web")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := m.Get(ctx, id)
		done <- err
	}()
	<-client.started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get() error = %v, want context.Canceled", err)
	}

	// The abandoned request does not poison the next one.
	close(client.gate)
	if _, err := m.Get(context.Background(), id); err != nil {
		t.Fatalf("Get() after cancellation: %v", err)
	}
	if got := client.calls.Load(); got != 2 {
		t.Fatalf("CA called %d times, want 2", got)
	}
}

func TestManagerNeverReturnsExpired(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	id := mustID(t, "default", "web")
	ctx := context.Background()
	cert, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	client.fail.Store(true)

	// Past half-life the old certificate is still served without asking the CA.
	clock.Set(cert.RenewAt().Add(time.Hour))
	if got, err := m.Get(ctx, id); err != nil || got != cert {
		t.Fatalf("Get() before expiry = %p, %v; want the cached certificate", got, err)
	}

	clock.Set(cert.NotAfter)
	got, err := m.Get(ctx, id)
	if !errors.Is(err, ErrExpired) || !errors.Is(err, errTestCA) || got != nil {
		t.Fatalf("Get() after expiry = %v, %v; want ErrExpired wrapping the CA error", got, err)
	}

	// Once the CA is back, a fresh certificate is fetched.
	client.fail.Store(false)
	got, err = m.Get(ctx, id)
	if err != nil || got.Expired(clock.Now()) {
		t.Fatalf("Get() after recovery = %v, %v", got, err)
	}
}

func TestManagerChecksCAReply(t *testing.T) {
	clock := newFakeClock()
	id := mustID(t, "default", "web")
	otherCA := mustCA(t, clock)
	signOther := func(ca *CA, id spiffeid.ID) []*x509.Certificate {
		chain, err := ca.Sign(mustCSR(t, mustKey(t), id), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		return chain
	}

	tests := []struct {
		name    string
		rewrite func(*CA, []*x509.Certificate) []*x509.Certificate
		now     time.Time // manager's clock, if not testEpoch
		wantErr error
	}{
		{"empty chain", func(*CA, []*x509.Certificate) []*x509.Certificate { return nil }, time.Time{}, ErrInvalidCertificate},
		{"nil certificate", func(*CA, []*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{nil} }, time.Time{}, ErrInvalidCertificate},
		{"other identity", func(ca *CA, _ []*x509.Certificate) []*x509.Certificate {
			return signOther(ca, mustID(t, "default", "db"))
		}, time.Time{}, ErrSANMismatch},
		{"other key", func(ca *CA, _ []*x509.Certificate) []*x509.Certificate { return signOther(ca, id) }, time.Time{}, ErrInvalidCertificate},
		{"broken chain", func(_ *CA, c []*x509.Certificate) []*x509.Certificate {
			return []*x509.Certificate{c[0], otherCA.Roots()[0]}
		}, time.Time{}, ErrInvalidCertificate},
		{"expired", nil, testEpoch.Add(48 * time.Hour), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := mustCA(t, clock)
			client := &testClient{next: ca.Client()}
			if tt.rewrite != nil {
				client.rewrite = func(c []*x509.Certificate) []*x509.Certificate { return tt.rewrite(ca, c) }
			}
			mclock := newFakeClock()
			if !tt.now.IsZero() {
				mclock.Set(tt.now)
			}
			m := NewManager(client, ManagerOptions{Now: mclock.Now, Logger: testLogger(t)})
			cert, err := m.Get(context.Background(), id)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Get() = %v, %v; want %v", cert, err, tt.wantErr)
			}
		})
	}
}

func TestManagerRenewsAtHalfLife(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	id := mustID(t, "default", "web")
	ctx := context.Background()
	first, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	half := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)
	if !first.RenewAt().Equal(half) {
		t.Fatalf("RenewAt() = %v, want %v", first.RenewAt(), half)
	}

	m.renewDue(ctx, half.Add(-time.Second))
	if got := client.calls.Load(); got != 1 {
		t.Fatalf("renewed before half-life: %d CA calls", got)
	}

	clock.Set(half)
	m.renewDue(ctx, half)
	if got := client.calls.Load(); got != 2 {
		t.Fatalf("CA called %d times at half-life, want 2", got)
	}
	second, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || !second.NotAfter.After(first.NotAfter) {
		t.Fatal("Get() after renewal returned the old certificate")
	}
}

func TestManagerRenewalBackoff(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock)
	client := &testClient{next: ca.Client()}
	m := NewManager(client, ManagerOptions{Now: clock.Now, MinRetry: time.Second, MaxRetry: 4 * time.Second, Logger: testLogger(t)})
	id := mustID(t, "default", "web")
	ctx := context.Background()
	first, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	client.fail.Store(true)

	now := first.RenewAt()
	steps := []struct {
		advance   time.Duration
		wantCalls int32
		wantRetry time.Duration // after this step, relative to now
	}{
		{0, 2, time.Second},                   // first failure
		{time.Second / 2, 2, time.Second / 2}, // not yet due
		{time.Second / 2, 3, 2 * time.Second}, // second failure: doubled
		{2 * time.Second, 4, 4 * time.Second}, // third: doubled to max
		{4 * time.Second, 5, 4 * time.Second}, // capped
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		clock.Set(now)
		m.renewDue(ctx, now)
		if got := client.calls.Load(); got != s.wantCalls {
			t.Fatalf("step %d: %d CA calls, want %d", i, got, s.wantCalls)
		}
		if next, _ := m.nextDue(); !next.Equal(now.Add(s.wantRetry)) {
			t.Fatalf("step %d: next attempt at %v, want %v", i, next.Sub(now), s.wantRetry)
		}
		// The old certificate is still served meanwhile.
		if got, err := m.Get(ctx, id); err != nil || got != first {
			t.Fatalf("step %d: Get() = %p, %v; want the old certificate", i, got, err)
		}
	}

	client.fail.Store(false)
	now = now.Add(4 * time.Second)
	clock.Set(now)
	m.renewDue(ctx, now)
	got, err := m.Get(ctx, id)
	if err != nil || got == first {
		t.Fatalf("Get() after recovery = %p, %v; want a new certificate", got, err)
	}
	if next, _ := m.nextDue(); !next.Equal(got.RenewAt()) {
		t.Fatalf("after recovery next attempt at %v, want half-life %v", next, got.RenewAt())
	}
}

func TestManagerForget(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	id := mustID(t, "default", "web")
	ctx := context.Background()
	cert, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	m.Forget(id)
	if _, ok := m.nextDue(); ok {
		t.Fatal("forgotten identity is still scheduled")
	}
	m.renewDue(ctx, cert.NotAfter)
	if got := client.calls.Load(); got != 1 {
		t.Fatalf("forgotten identity was renewed: %d CA calls", got)
	}
	if again, err := m.Get(ctx, id); err != nil || again == cert {
		t.Fatalf("Get() after Forget = %p, %v; want a new certificate", again, err)
	}
}

// TestManagerRun drives the renewal loop with a fake timer: each time the
// loop arms a timer it reports the delay, and the test fires it.
func TestManagerRun(t *testing.T) {
	clock := newFakeClock()
	m, client, _ := newTestManager(t, clock)
	type timer struct {
		d    time.Duration
		fire chan time.Time
	}
	timers := make(chan timer)
	m.newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		tm := timer{d, make(chan time.Time, 1)}
		timers <- tm
		return tm.fire, func() bool { return true }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()

	id := mustID(t, "default", "web")
	first, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// The new identity wakes the loop, which arms a timer for its half-life.
	tm := <-timers
	if want := first.RenewAt().Sub(clock.Now()); tm.d != want {
		t.Fatalf("timer armed for %v, want %v", tm.d, want)
	}

	clock.Set(first.RenewAt())
	tm.fire <- clock.Now()
	tm = <-timers // armed again once the renewal is done
	if got := client.calls.Load(); got != 2 {
		t.Fatalf("CA called %d times, want 2", got)
	}
	second, err := m.Get(ctx, id)
	if err != nil || second == first {
		t.Fatalf("Get() after renewal = %p, %v; want a new certificate", second, err)
	}
	if want := second.RenewAt().Sub(clock.Now()); tm.d != want {
		t.Fatalf("timer re-armed for %v, want %v", tm.d, want)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
}

func TestBackoff(t *testing.T) {
	m := NewManager(nil, ManagerOptions{MinRetry: time.Second, MaxRetry: 10 * time.Second})
	for failures, want := range map[int]time.Duration{
		1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second,
		5: 10 * time.Second, 100: 10 * time.Second,
	} {
		if got := m.backoff(failures); got != want {
			t.Errorf("backoff(%d) = %v, want %v", failures, got, want)
		}
	}
}
