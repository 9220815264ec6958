// Package retry decides whether the waypoint sends a failed request
// again, when, and whether it still can.
//
// Three things with three lifetimes, as in Envoy: a Policy is part of
// the route configuration and says which outcomes are retried, how many
// times and with what delay; a Budget is shared by all the requests to
// one service and caps retries as a share of requests, so that retries
// cannot multiply the load on a service that is already failing; a
// ReplayBody lives for one request and keeps the body it has sent, so
// that it can be sent again.
//
// A request that never reached the backend (no connection, or a stream
// the backend refused) is always safe to send again, so both Default and
// the policies FromRoute builds retry those. Whether anything else is
// retried is the route's choice.
package retry

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
)

// Defaults of Default, and of what a route's retry leaves out.
const (
	DefaultAttempts = 2
	DefaultBackoff  = 25 * time.Millisecond
	// MaxBackoffFactor is how many Backoffs a delay may reach when the
	// policy sets no MaxBackoff.
	MaxBackoffFactor = 10
)

// OutcomeKind is how an attempt ended.
type OutcomeKind uint8

const (
	// ConnectFailure: no connection (or tunnel) to the endpoint, so
	// nothing was sent.
	ConnectFailure OutcomeKind = iota + 1
	// RefusedStream: the endpoint refused the request before processing
	// it (HTTP/2 REFUSED_STREAM, or a connection that closed before
	// answering an idempotent request).
	RefusedStream
	// Reset: the connection or stream broke after the request was sent.
	Reset
	// Timeout: the attempt's own timeout (the rule's BackendTimeout)
	// expired. The request's overall deadline is not an outcome to retry.
	Timeout
	// Response: the endpoint answered; see Status and GRPCStatus.
	Response
)

func (k OutcomeKind) String() string {
	switch k {
	case ConnectFailure:
		return "connect-failure"
	case RefusedStream:
		return "refused-stream"
	case Reset:
		return "reset"
	case Timeout:
		return "timeout"
	case Response:
		return "response"
	}
	return fmt.Sprintf("OutcomeKind(%d)", uint8(k))
}

// Outcome is how an attempt ended. The zero Outcome is no outcome the
// package knows, and is never retried.
type Outcome struct {
	Kind OutcomeKind
	// Status is the HTTP status of a Response.
	Status int
	// GRPCStatus is the grpc-status of a Response (from its headers or
	// trailers), or -1 when it has none.
	GRPCStatus int
}

// Outlier is the outcome as outlier detection counts it: every failure
// to get an answer is a local failure, and a response is judged by its
// statuses (outlier.ResponseOutcome).
func (o Outcome) Outlier() outlier.Outcome {
	switch o.Kind {
	case ConnectFailure, RefusedStream, Reset, Timeout:
		return outlier.LocalFailure
	case Response:
		return outlier.ResponseOutcome(o.Status, o.GRPCStatus)
	}
	return outlier.Neutral
}

// Kinds is a set of outcome kinds.
type Kinds uint8

// KindsOf returns the set holding ks.
func KindsOf(ks ...OutcomeKind) Kinds {
	var s Kinds
	for _, k := range ks {
		if k >= ConnectFailure && k <= Response {
			s |= 1 << k
		}
	}
	return s
}

// Has reports whether k is in s.
func (s Kinds) Has(k OutcomeKind) bool { return k <= Response && s&(1<<k) != 0 }

// Policy says which failed attempts of a request are tried again, how
// many times, and after what delay. A Policy is part of the immutable
// route configuration: build it once per configuration, not per request.
// The zero Policy never retries.
type Policy struct {
	// Attempts is how many times a request may be retried after its
	// first try (GEP-1731: "the maximum number of times an individual
	// request from the gateway to a backend should be retried"), so a
	// request is sent at most Attempts+1 times. 0 never retries.
	Attempts int
	// On holds the outcome kinds other than Response that are retried.
	On Kinds
	// Codes are the HTTP statuses of responses that are retried.
	Codes []int
	// GRPCCodes are the grpc-status values of responses that are
	// retried.
	GRPCCodes []int
	// Backoff is the base delay before a retry, and its minimum:
	// GEP-1731 forbids retrying sooner.
	Backoff time.Duration
	// MaxBackoff caps the delay; 0 means MaxBackoffFactor × Backoff.
	// It never shortens a delay below Backoff.
	MaxBackoff time.Duration
}

// gRPC status codes.
const (
	grpcUnavailable = 14
)

// Default is the policy of a rule without a retry: a request that did not
// reach the backend, or that the backend said it could not serve now (HTTP
// 503, gRPC UNAVAILABLE), is tried twice more, 25 ms apart and more.
// Responses that may follow work the backend did (other 5xx, resets,
// timeouts) are not retried unless a route asks.
func Default() Policy {
	return Policy{
		Attempts:  DefaultAttempts,
		On:        KindsOf(ConnectFailure, RefusedStream),
		Codes:     []int{503},
		GRPCCodes: []int{grpcUnavailable},
		Backoff:   DefaultBackoff,
	}
}

// FromRoute returns the policy of a rule's retry (nil: Default). The
// route gives the attempts, the statuses retried (exactly those: a 503 is
// retried only if listed) and the backoff; an attempts or backoff of 0
// means the route left it out, and Default's value stands. Beyond the
// route's statuses, failures to get any answer are retried: connection
// failures and refused streams, which never reached the backend, and,
// as GEP-1731 asks of a route that configures retry, resets and
// timeouts.
func FromRoute(r *config.Retry) Policy {
	p := Default()
	if r == nil {
		return p
	}
	if r.Attempts > 0 {
		p.Attempts = r.Attempts
	}
	if r.Backoff > 0 {
		p.Backoff = r.Backoff
	}
	p.On = KindsOf(ConnectFailure, RefusedStream, Reset, Timeout)
	p.Codes = r.Codes
	p.GRPCCodes = nil
	return p
}

// Retryable reports whether an attempt that ended with o may be retried
// under p; whether attempts, time and the Budget allow it is the
// caller's to check.
func (p Policy) Retryable(o Outcome) bool {
	switch {
	case p.Attempts <= 0:
		return false
	case o.Kind == Response:
		return slices.Contains(p.Codes, o.Status) ||
			o.GRPCStatus >= 0 && slices.Contains(p.GRPCCodes, o.GRPCStatus)
	}
	return p.On.Has(o.Kind)
}

// Delay returns how long to wait before retry number retry (1 for the
// first retry). The delay grows exponentially with equal jitter: the
// ceiling is Backoff × 2^retry, capped by MaxBackoff, and the delay is
// half the ceiling plus a random share (jitter, in [0, 1)) of the other
// half. Equal rather than full jitter, because GEP-1731 makes Backoff a
// minimum: the first retry waits between Backoff and 2 × Backoff, and no
// delay is ever shorter than Backoff. A nil jitter adds nothing.
func (p Policy) Delay(retry int, jitter func() float64) time.Duration {
	base := max(p.Backoff, 0)
	ceiling := p.MaxBackoff
	if ceiling <= 0 {
		ceiling = MaxBackoffFactor * base
		if base > math.MaxInt64/MaxBackoffFactor {
			ceiling = math.MaxInt64
		}
	}
	retry = max(retry, 1)
	if retry < 62 && base <= ceiling>>retry {
		ceiling = base << retry
	}
	half := ceiling / 2
	var j float64
	if jitter != nil {
		j = jitter()
		if !(j >= 0 && j < 1) { // NaN included
			j = 0
		}
	}
	return max(half+time.Duration(j*float64(ceiling-half)), base)
}
