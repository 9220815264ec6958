package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Load modes.
const (
	modeNew   = "new"   // a new TCP connection for every request
	modeReuse = "reuse" // HTTP keep-alive connections, as most clients use
	modeLong  = "long"  // connections opened at the start and kept to the end
)

// loadConfig is what `echo load` was asked to do.
type loadConfig struct {
	url      *url.URL
	mode     string
	rate     float64       // requests per second, all workers together
	conns    int           // workers (concurrent connections)
	duration time.Duration // measured period, after the warm-up
	timeout  time.Duration // per request: longer is a failure ("hung" in long mode)
	warmup   time.Duration // at most this long for a first answer before measuring
}

// loadResult is the one JSON line `echo load` prints.
type loadResult struct {
	Mode    string         `json:"mode"`
	Target  string         `json:"target"`
	StartMS int64          `json:"start_ms"` // unix milliseconds when measuring began
	EndMS   int64          `json:"end_ms"`
	OK      int            `json:"ok"`
	Failed  int            `json:"failed"`
	Errors  map[string]int `json:"errors,omitempty"` // failure reasons (at most maxReasons kinds)
	Pods    map[string]int `json:"pods,omitempty"`   // answers per pod (the report's pod= line)
	// Spans are runs of attempts with the same outcome, in the order they
	// completed: with one worker, exactly when the target answered.
	Spans []span `json:"spans"`
	// Conns counts how long-lived connections ended (long mode only).
	Conns *connOutcomes `json:"conns,omitempty"`
}

type span struct {
	OK     bool  `json:"ok"`
	N      int   `json:"n"`
	FromMS int64 `json:"from_ms"` // start of the run's first attempt
	ToMS   int64 `json:"to_ms"`   // end of its last attempt
}

// connOutcomes: how each long-lived connection ended. Finished: it still
// worked when the load ended. Closed: the peer closed or reset it, a clean
// end. Hung: a request got no answer within the timeout, the one outcome a
// drain must never cause. Failed: anything else (refused, a non-200 answer).
type connOutcomes struct {
	Finished int `json:"finished"`
	Closed   int `json:"closed"`
	Hung     int `json:"hung"`
	Failed   int `json:"failed"`
}

const maxReasons = 10

// recorder collects outcomes from concurrent workers.
type recorder struct {
	mu  sync.Mutex
	res loadResult
}

func (r *recorder) record(start, end time.Time, pod string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := err == nil
	if ok {
		r.res.OK++
		if pod != "" {
			if r.res.Pods == nil {
				r.res.Pods = map[string]int{}
			}
			r.res.Pods[pod]++
		}
	} else {
		r.res.Failed++
		if r.res.Errors == nil {
			r.res.Errors = map[string]int{}
		}
		reason := errorReason(err)
		if _, seen := r.res.Errors[reason]; seen || len(r.res.Errors) < maxReasons {
			r.res.Errors[reason]++
		} else {
			r.res.Errors["other"]++
		}
	}
	from, to := start.UnixMilli(), end.UnixMilli()
	if n := len(r.res.Spans); n > 0 && r.res.Spans[n-1].OK == ok {
		s := &r.res.Spans[n-1]
		s.N++
		s.FromMS, s.ToMS = min(s.FromMS, from), max(s.ToMS, to)
		return
	}
	r.res.Spans = append(r.res.Spans, span{OK: ok, N: 1, FromMS: from, ToMS: to})
}

func (r *recorder) conn(f func(*connOutcomes)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.res.Conns == nil {
		r.res.Conns = &connOutcomes{}
	}
	f(r.res.Conns)
}

// errorReason shortens an error to its kind, without addresses or ports
// that would make every failure a reason of its own.
func errorReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by peer"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func parseLoad(args []string) (*loadConfig, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	cfg := &loadConfig{}
	fs.StringVar(&cfg.mode, "mode", modeNew, "new (a connection per request), reuse (keep-alive) or long (connections kept from start to end)")
	fs.Float64Var(&cfg.rate, "rate", 20, "requests per second, all connections together")
	fs.IntVar(&cfg.conns, "conns", 4, "concurrent connections (workers)")
	fs.DurationVar(&cfg.duration, "duration", 30*time.Second, "how long to measure")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "per-request timeout")
	fs.DurationVar(&cfg.warmup, "warmup", 0, "wait up to this long for a first answer before measuring (0: measure at once)")
	var target string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		target, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if target == "" {
		target = fs.Arg(0)
	}
	if target == "" {
		return nil, errors.New("load: missing URL")
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("load: %q: want an http:// URL with a host", target)
	}
	cfg.url = u
	switch {
	case cfg.mode != modeNew && cfg.mode != modeReuse && cfg.mode != modeLong:
		return nil, fmt.Errorf("load: -mode %q: want new, reuse or long", cfg.mode)
	case !(cfg.rate > 0) || cfg.rate > 1e6:
		return nil, fmt.Errorf("load: -rate %v: want a positive number of requests per second", cfg.rate)
	case cfg.conns < 1 || cfg.conns > 10000:
		return nil, fmt.Errorf("load: -conns %d: want 1 to 10000", cfg.conns)
	case cfg.duration <= 0 || cfg.timeout <= 0 || cfg.warmup < 0:
		return nil, errors.New("load: -duration and -timeout must be positive, -warmup not negative")
	}
	return cfg, nil
}

// load runs `echo load` and prints its result as one JSON line; progress
// goes to stderr. SIGTERM ends the measurement early, with a result.
func load(args []string) error {
	cfg, err := parseLoad(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := runLoad(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func runLoad(ctx context.Context, cfg *loadConfig, progress io.Writer) (*loadResult, error) {
	if cfg.warmup > 0 {
		if err := warmUp(ctx, cfg); err != nil {
			fmt.Fprintf(progress, "load: no answer during the %v warm-up (%v); measuring anyway\n", cfg.warmup, err)
		}
	}
	r := &recorder{res: loadResult{Mode: cfg.mode, Target: cfg.url.String()}}
	start := time.Now()
	r.res.StartMS = start.UnixMilli()
	fmt.Fprintf(progress, "load: measuring from %d for %v\n", r.res.StartMS, cfg.duration)
	mctx, cancel := context.WithDeadline(ctx, start.Add(cfg.duration))
	defer cancel()
	interval := time.Duration(float64(cfg.conns) / cfg.rate * float64(time.Second))
	var wg sync.WaitGroup
	for i := range cfg.conns {
		// Spread the workers over one interval rather than start in step.
		first := start.Add(interval * time.Duration(i) / time.Duration(cfg.conns))
		switch cfg.mode {
		case modeLong:
			wg.Go(func() { longConn(mctx, cfg, first, interval, r) })
		default:
			client := newClient(cfg)
			wg.Go(func() {
				defer client.CloseIdleConnections()
				pace(mctx, first, interval, func() bool {
					t := time.Now()
					pod, err := request(mctx, client, cfg.url)
					if mctx.Err() != nil && err != nil {
						return false // cut short by the end, not a failure
					}
					r.record(t, time.Now(), pod, err)
					return true
				})
			})
		}
	}
	wg.Wait()
	r.res.EndMS = time.Now().UnixMilli()
	if r.res.Spans == nil {
		r.res.Spans = []span{}
	}
	return &r.res, nil
}

// pace calls f at first, first+interval, ... until ctx ends or f returns
// false; a call that overruns delays the next rather than piling up.
func pace(ctx context.Context, first time.Time, interval time.Duration, f func() bool) {
	next := first
	for {
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil || !f() {
			return
		}
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
	}
}

func newClient(cfg *loadConfig) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.timeout}).DialContext,
		DisableKeepAlives:   cfg.mode == modeNew,
		MaxIdleConnsPerHost: 1,
	}
	return &http.Client{Transport: tr, Timeout: cfg.timeout}
}

func warmUp(ctx context.Context, cfg *loadConfig) error {
	client := newClient(&loadConfig{mode: modeNew, timeout: cfg.timeout})
	deadline := time.Now().Add(cfg.warmup)
	for {
		_, err := request(ctx, client, cfg.url)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// request GETs u and returns the answering pod; any answer but 200 is an
// error.
func request(ctx context.Context, c *http.Client, u *url.URL) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return podOf(b), nil
}

// podOf returns the value of the report's pod= line, "" when it has none.
func podOf(body []byte) string {
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "pod="); ok {
			return v
		}
	}
	return ""
}

// longConn opens one connection and sends a request on it every interval
// until ctx ends or the connection does, and records how it ended.
func longConn(ctx context.Context, cfg *loadConfig, first time.Time, interval time.Duration, r *recorder) {
	d := net.Dialer{Timeout: cfg.timeout}
	t := time.Now()
	conn, err := d.DialContext(ctx, "tcp", hostPort(cfg.url))
	if err != nil {
		if ctx.Err() == nil {
			r.record(t, time.Now(), "", err)
			r.conn(func(o *connOutcomes) { o.Failed++ })
		}
		return
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	var ended error
	pace(ctx, first, interval, func() bool {
		t := time.Now()
		pod, err := roundTrip(conn, br, cfg)
		if errors.Is(err, errServerClose) {
			r.record(t, time.Now(), pod, nil)
		} else {
			r.record(t, time.Now(), pod, err)
		}
		ended = err
		return err == nil
	})
	r.conn(func(o *connOutcomes) {
		var ne net.Error
		switch {
		case ended == nil:
			o.Finished++
		case errors.As(ended, &ne) && ne.Timeout():
			o.Hung++
		case errors.Is(ended, errServerClose), errors.Is(ended, io.EOF), errors.Is(ended, io.ErrUnexpectedEOF),
			errors.Is(ended, syscall.ECONNRESET), errors.Is(ended, syscall.EPIPE):
			o.Closed++
		default:
			o.Failed++
		}
	})
}

// errServerClose: an answer came, and with it word that the server closes
// the connection (Connection: close), a clean end.
var errServerClose = errors.New("answered, and the server closes the connection")

// roundTrip sends one HTTP/1.1 request on conn and reads its answer, all
// within cfg.timeout.
func roundTrip(conn net.Conn, br *bufio.Reader, cfg *loadConfig) (string, error) {
	conn.SetDeadline(time.Now().Add(cfg.timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: echo-load\r\n\r\n", cfg.url.RequestURI(), cfg.url.Host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.Close {
		return podOf(b), errServerClose
	}
	return podOf(b), nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}
