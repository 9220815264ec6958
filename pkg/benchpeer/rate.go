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
	fail := func(err error) {
		mu.Lock()
		if failure == nil {
			failure = err
		}
		mu.Unlock()
		cancel()
	}
	for i := range f.Conns {
		client, closeIdle := f.client()
		defer closeIdle()
		offset := interval * time.Duration(i) / time.Duration(f.Conns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reqs sync.WaitGroup
			defer reqs.Wait()
			for due := start.Add(offset); due.Before(end); due = due.Add(interval) {
				t := time.NewTimer(time.Until(due))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				reqs.Add(1)
				go func() {
					defer reqs.Done()
					if err := get(ctx, client, f.URL); err != nil {
						fail(err)
						return
					}
					if d := time.Since(due); !due.Before(measureFrom) {
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}()
			}
		}()
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
