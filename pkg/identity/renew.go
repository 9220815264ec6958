package identity

import (
	"context"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Run renews cached certificates at half-life until ctx is done, then
// returns nil. A failed renewal is retried with exponential backoff while
// the old certificate keeps being served until it expires.
func (m *Manager) Run(ctx context.Context) error {
	for {
		// Whatever woke us, the state is about to be re-read.
		select {
		case <-m.wake:
		default:
		}
		m.renewDue(ctx, m.now())

		var timer <-chan time.Time
		stop := func() bool { return false }
		if next, ok := m.nextDue(); ok {
			d := next.Sub(m.now())
			if d <= 0 {
				// Still due right after renewDue: the CA handed out a
				// certificate already past half-life. Pace rather than spin.
				d = m.minRetry
			}
			timer, stop = m.newTimer(d)
		}
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-timer:
		case <-m.wake:
		}
		stop()
	}
}

// renewDue renews, concurrently, every certificate due at now, and returns
// when all attempts have finished.
func (m *Manager) renewDue(ctx context.Context, now time.Time) {
	m.mu.Lock()
	var due []spiffeid.ID
	for id, e := range m.entries {
		if !now.Before(e.dueAt()) {
			due = append(due, id)
		}
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, id := range due {
		wg.Go(func() { m.renew(ctx, id) })
	}
	wg.Wait()
}

func (m *Manager) renew(ctx context.Context, id spiffeid.ID) {
	cert, err := m.fetch(ctx, id)
	if err == nil {
		m.log.Info("renewed certificate", "id", id.String(), "not_after", cert.NotAfter)
		return
	}
	if ctx.Err() != nil {
		return // shutting down
	}
	m.mu.Lock()
	e := m.entries[id]
	if e == nil { // forgotten meanwhile
		m.mu.Unlock()
		return
	}
	e.failures++
	wait := m.backoff(e.failures)
	e.retryAt = m.now().Add(wait)
	notAfter := e.cert.NotAfter
	m.mu.Unlock()
	m.log.Warn("certificate renewal failed", "id", id.String(), "err", err,
		"retry_in", wait, "not_after", notAfter)
}

// backoff is the wait after the given number of consecutive failures:
// MinRetry doubling up to MaxRetry.
func (m *Manager) backoff(failures int) time.Duration {
	d := m.minRetry
	for i := 1; i < failures && d < m.maxRetry; i++ {
		d *= 2
	}
	return min(d, m.maxRetry)
}

// nextDue returns the earliest time any entry is due for renewal.
func (m *Manager) nextDue() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for _, e := range m.entries {
		if t := e.dueAt(); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next, !next.IsZero()
}
