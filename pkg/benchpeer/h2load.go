package benchpeer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// H2Load is one run of h2load (Debian's nghttp2-client), the load
// generator of the waypoint benchmark: it speaks HTTP/1.1 and HTTP/2,
// in plaintext and over TLS, at saturation or at a fixed rate.
type H2Load struct {
	// URL is requested over and over.
	URL string
	// HTTP1 forces HTTP/1.1 (keep-alive, no pipelining); otherwise h2load
	// speaks HTTP/2 (prior knowledge for http://, ALPN for https://).
	HTTP1 bool
	// Clients is the number of connections (-c); 0 means 1.
	Clients int
	// Streams is the number of requests in flight per HTTP/2 connection
	// (-m); 0 means 1.
	Streams int
	// Requests (-n) or Duration (-D) bounds the run; one must be set.
	Requests int
	Duration time.Duration
	// WarmUp is sent before Duration and left out of the results.
	WarmUp time.Duration
	// RatePerClient sends that many requests per second on each
	// connection (--rps); 0 means as fast as answers come.
	RatePerClient int
	// Latencies asks for every request's latency (h2load's --log-file,
	// written in Dir).
	Latencies bool
	Dir       string
	// CPUs pins h2load (a taskset CPU list).
	CPUs string
}

// H2LoadResult is what a run measured.
type H2LoadResult struct {
	H2LoadSummary
	// Latencies of each request of the measured phase, when asked for.
	Latencies []time.Duration
}

// Run runs h2load and fails unless every request got a 2xx answer: a
// proxy that answers errors quickly must not look fast.
func (h H2Load) Run(ctx context.Context) (*H2LoadResult, error) {
	bin, err := exec.LookPath("h2load")
	if err != nil {
		return nil, errors.New("h2load not found: install Debian's nghttp2-client (make bench-waypoint does)")
	}
	args := []string{"-t", "1", "-c", strconv.Itoa(max(1, h.Clients)), "-m", strconv.Itoa(max(1, h.Streams))}
	if h.HTTP1 {
		args = append(args, "--h1")
	}
	switch {
	case h.Requests > 0 && h.Duration == 0:
		args = append(args, "-n", strconv.Itoa(h.Requests))
	case h.Duration > 0 && h.Requests == 0:
		args = append(args, "-D", durationArg(h.Duration))
		if h.WarmUp > 0 {
			args = append(args, "--warm-up-time", durationArg(h.WarmUp))
		}
	default:
		return nil, errors.New("benchpeer: set exactly one of H2Load.Requests and H2Load.Duration")
	}
	if h.RatePerClient > 0 {
		args = append(args, "--rps", strconv.Itoa(h.RatePerClient))
	}
	var logPath string
	if h.Latencies {
		if h.Dir == "" {
			return nil, errors.New("benchpeer: H2Load.Latencies needs H2Load.Dir")
		}
		f, err := os.CreateTemp(h.Dir, "h2load-*.log")
		if err != nil {
			return nil, err
		}
		logPath = f.Name()
		f.Close()
		defer os.Remove(logPath)
		args = append(args, "--log-file", logPath)
	}
	args = append(args, h.URL)
	var out bytes.Buffer
	cmd := Command(ctx, h.CPUs, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("h2load %s: %w\n%s", strings.Join(args, " "), err, tail(out.Bytes(), 2000))
	}
	s, err := ParseH2LoadSummary(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("h2load %s: %w\n%s", h.URL, err, tail(out.Bytes(), 2000))
	}
	// The status counts may include answers to warm-up requests that
	// came in the measured phase: they are not compared with Done.
	if s.Done == 0 || s.Failed != 0 || s.Status3xx+s.Status4xx+s.Status5xx != 0 {
		return nil, fmt.Errorf("h2load %s: %d requests done, %d failed; answers: %d 2xx, %d 3xx, %d 4xx, %d 5xx",
			h.URL, s.Done, s.Failed, s.Status2xx, s.Status3xx, s.Status4xx, s.Status5xx)
	}
	r := &H2LoadResult{H2LoadSummary: s}
	if logPath != "" {
		f, err := os.Open(logPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		recs, err := ParseH2LoadLog(f)
		if err != nil {
			return nil, fmt.Errorf("h2load log of %s: %w", h.URL, err)
		}
		if r.Latencies, err = latencies(recs, max(1, h.Clients)); err != nil {
			return nil, fmt.Errorf("h2load log of %s: %w", h.URL, err)
		}
	}
	return r, nil
}

// durationArg writes d in h2load's duration syntax (whole milliseconds).
func durationArg(d time.Duration) string {
	return strconv.FormatInt(max(1, d.Milliseconds()), 10) + "ms"
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// H2LoadSummary is h2load's closing report.
type H2LoadSummary struct {
	// Elapsed is the whole run, warm-up included; RequestsPerSec covers
	// the measured phase only (h2load divides by its duration).
	Elapsed        time.Duration
	RequestsPerSec float64
	// Request counts ("requests:" line).
	Total, Started, Done, Succeeded, Failed, Errored, Timeout int64
	// Answers by class ("status codes:" line).
	Status2xx, Status3xx, Status4xx, Status5xx int64
	// DataBytes is the response bodies' size ("traffic:" line).
	DataBytes int64
}

var (
	finishedRe = regexp.MustCompile(`(?m)^finished in ([0-9.]+)(ms|us|s), ([0-9.]+) req/s`)
	requestsRe = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	statusRe   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	trafficRe  = regexp.MustCompile(`(?m)^traffic: .*\((\d+)\) data\s*$`)
)

// ParseH2LoadSummary reads the report h2load prints at the end of a run.
// Every line it relies on must be there, and no more requests may have
// succeeded or failed than were done. (Answers are not compared with
// requests done: they may include answers to warm-up requests.)
func ParseH2LoadSummary(out []byte) (H2LoadSummary, error) {
	var s H2LoadSummary
	m := finishedRe.FindSubmatch(out)
	if m == nil {
		return s, errors.New("benchpeer: no \"finished in\" line in h2load's output")
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return s, fmt.Errorf("benchpeer: h2load elapsed time %q: %w", m[1], err)
	}
	unit := map[string]time.Duration{"s": time.Second, "ms": time.Millisecond, "us": time.Microsecond}[string(m[2])]
	if v > float64(24*time.Hour/unit) {
		return s, fmt.Errorf("benchpeer: h2load elapsed time %s%s out of range", m[1], m[2])
	}
	s.Elapsed = time.Duration(v * float64(unit))
	if s.RequestsPerSec, err = strconv.ParseFloat(string(m[3]), 64); err != nil {
		return s, fmt.Errorf("benchpeer: h2load req/s %q: %w", m[3], err)
	}
	if err := scanInts(requestsRe, out, "requests", &s.Total, &s.Started, &s.Done, &s.Succeeded, &s.Failed, &s.Errored, &s.Timeout); err != nil {
		return s, err
	}
	if err := scanInts(statusRe, out, "status codes", &s.Status2xx, &s.Status3xx, &s.Status4xx, &s.Status5xx); err != nil {
		return s, err
	}
	if err := scanInts(trafficRe, out, "traffic", &s.DataBytes); err != nil {
		return s, err
	}
	if s.Succeeded > s.Done || s.Failed > s.Done {
		return s, fmt.Errorf("benchpeer: h2load reports %d done but %d succeeded and %d failed", s.Done, s.Succeeded, s.Failed)
	}
	return s, nil
}

// scanInts fills dst from re's submatches in out.
func scanInts(re *regexp.Regexp, out []byte, what string, dst ...*int64) error {
	m := re.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("benchpeer: no %q line in h2load's output", what)
	}
	for i, d := range dst {
		v, err := strconv.ParseInt(string(m[i+1]), 10, 64)
		if err != nil {
			return fmt.Errorf("benchpeer: h2load %s: %w", what, err)
		}
		*d = v
	}
	return nil
}

// latencies are the latencies of the 2xx answers in recs. Over HTTP/2,
// h2load logs one request per connection without a status (0) when the
// warm-up ends; up to one per connection is left out, any other status
// is an error.
func latencies(recs []H2LoadRecord, conns int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, len(recs))
	unanswered := 0
	for _, r := range recs {
		switch {
		case r.Status >= 200 && r.Status <= 299:
			out = append(out, r.Latency)
		case r.Status == 0:
			unanswered++
		default:
			return nil, fmt.Errorf("a request was answered %d", r.Status)
		}
	}
	if unanswered > conns {
		return nil, fmt.Errorf("%d requests without an answer on %d connections", unanswered, conns)
	}
	return out, nil
}

// H2LoadRecord is one request in h2load's log.
type H2LoadRecord struct {
	// Start is when the request started, in µs since the epoch.
	Start int64
	// Status is the answer's status; 0 means none was recorded.
	Status  int
	Latency time.Duration
}

// ParseH2LoadLog reads h2load's --log-file: one request per line, tab
// separated: start (µs since the epoch), HTTP status (0 for none), and
// µs until the end of the response. It returns the records in file
// order and fails on a malformed line.
func ParseH2LoadLog(r io.Reader) ([]H2LoadRecord, error) {
	var out []H2LoadRecord
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("benchpeer: h2load log line %d: %d fields, want 3", n, len(f))
		}
		start, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || start < 0 {
			return nil, fmt.Errorf("benchpeer: h2load log line %d: start time %q", n, f[0])
		}
		status, err := strconv.Atoi(f[1])
		if err != nil || status < 0 || status > 999 {
			return nil, fmt.Errorf("benchpeer: h2load log line %d: status %q", n, f[1])
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || us < 0 || us > int64(time.Hour/time.Microsecond) {
			return nil, fmt.Errorf("benchpeer: h2load log line %d: latency %q µs", n, f[2])
		}
		out = append(out, H2LoadRecord{Start: start, Status: status, Latency: time.Duration(us) * time.Microsecond})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
