package benchpeer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// FixedRate sends GET requests at a fixed rate, open loop: each request
// is due at its time whether or not earlier ones were answered, and its
// latency runs from when it was due, so a stall shows in every request
// it delays. (h2load's --rps paces HTTP/2 requests on a timer tick and
// adds up to a tick to their latency, so the waypoint benchmark measures
// latency with this instead.)
type FixedRate struct {
	// URL is requested; https:// uses TLS 1.3 without verifying the
	// server.
	URL string
	// HTTP2 speaks HTTP/2 (prior knowledge for http://, ALPN for
	// https://); otherwise HTTP/1.1 with keep-alive.
	HTTP2 bool
	// Conns is the number of connections; each carries Rate/Conns
	// requests per second.
	Conns int
	// Rate is the total requests per second.
	Rate int
	// WarmUp runs at the rate before Duration, unmeasured.
	WarmUp, Duration time.Duration
}

// Run sends the requests and returns the latencies of the measured
// phase. It fails if any request fails or is answered other than 2xx.
func (f FixedRate) Run(ctx context.Context) ([]time.Duration, error) {
	if f.Conns <= 0 || f.Rate <= 0 || f.Duration <= 0 || f.WarmUp < 0 {
		return nil, errors.New("benchpeer: FixedRate needs Conns, Rate and Duration")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	interval := time.Second * time.Duration(f.Conns) / time.Duration(f.Rate)
	start := time.Now().Add(10 * time.Millisecond)
	measureFrom := start.Add(f.WarmUp)
	end := measureFrom.Add(f.Duration)

	var (
		mu      sync.Mutex
		lat     []time.Duration
		failure error
		wg      sync.WaitGroup
	)
	for i := range f.Conns {
		client, closeIdle := f.client()
		defer closeIdle()
		first := start.Add(interval * time.Duration(i) / time.Duration(f.Conns))
		wg.Go(func() {
			l, err := openLoop(ctx, first, measureFrom, end, interval, func(ctx context.Context) error {
				return get(ctx, client, f.URL)
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if failure == nil {
					failure = err
					cancel()
				}
				return
			}
			lat = append(lat, l...)
		})
	}
	wg.Wait()
	if failure != nil {
		return nil, failure
	}
	return lat, nil
}

// openLoop calls fn on a goroutine of its own at every due time from
// first, each interval, before end, whether or not earlier calls have
// returned. Once all have, it returns how long each call due at or after
// measureFrom took from when it was due, or the first error, which
// cancels the calls running and those to come.
func openLoop(ctx context.Context, first, measureFrom, end time.Time, interval time.Duration, fn func(context.Context) error) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		lat     []time.Duration
		failure error
		wg      sync.WaitGroup
	)
	for due := first; due.Before(end) && ctx.Err() == nil; due = due.Add(interval) {
		t := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			t.Stop()
			continue
		case <-t.C:
		}
		wg.Go(func() {
			err := fn(ctx)
			d := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if failure == nil {
					failure = err
					cancel()
				}
			case !due.Before(measureFrom):
				lat = append(lat, d)
			}
		})
	}
	wg.Wait()
	if failure != nil {
		return nil, failure
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return lat, nil
}

// client returns an HTTP client with its own connections, and a
// function that closes them.
func (f FixedRate) client() (*http.Client, func()) {
	var protos http.Protocols
	switch {
	case !f.HTTP2:
		protos.SetHTTP1(true)
	case strings.HasPrefix(f.URL, "http://"):
		protos.SetUnencryptedHTTP2(true) // prior knowledge
	default:
		protos.SetHTTP2(true)
	}
	t := &http.Transport{
		Protocols:          &protos,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, // cost, not trust, is measured
		DisableCompression: true,
		// HTTP/1.1: a second connection only while a request is slow.
		MaxIdleConnsPerHost: 1,
	}
	return &http.Client{Transport: t}, t.CloseIdleConnections
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("reading the answer of %s: %w", url, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
