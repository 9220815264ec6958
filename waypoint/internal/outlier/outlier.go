// Package outlier decides when the waypoint stops sending requests to an
// endpoint that keeps failing, and when it tries it again.
//
// Detection is passive: the proxy reports how each request to an
// endpoint ended, and an endpoint whose last Consecutive outcomes were all
// failures is ejected for a while. The first ejection lasts BaseEjection;
// each further one lasts BaseEjection times the number of ejections so
// far, up to MaxEjection, so that an endpoint that keeps relapsing is
// tried less and less often. The count is forgotten once the endpoint has
// gone a whole MaxEjection without being ejected, so an endpoint that
// recovered for good is not punished forever.
//
// Ejections are capped per set of endpoints (a Detector: one service
// port, as an Envoy cluster): an ejection that would leave more than
// MaxEjectionPercent of the set ejected is skipped and counted instead.
// Detection must not turn a service-wide problem, where every endpoint
// fails, into an outage the proxy made itself.
//
// There are no timers and no goroutines: an ejection is a deadline,
// compared with the injected clock by whoever asks whether the endpoint
// is ejected. The per-request calls (Report, EjectedAt) are lock-free;
// only an ejection decision takes the set's lock.
package outlier

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero Config fields.
const (
	DefaultConsecutive        = 5
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjection        = 300 * time.Second
	DefaultMaxEjectionPercent = 50
)

// DefaultFailures are the outcomes counted as failures by default: both
// locally originated failures and 5xx responses, in one run, as Linkerd's
// consecutive-failures accrual and Envoy's consecutive_5xx do.
const DefaultFailures = 1<<LocalFailure | 1<<GatewayFailure | 1<<ServerError

// Outcome is how a request to an endpoint ended, as far as the endpoint's
// health is concerned.
type Outcome uint8

const (
	// Success is any answer the endpoint is not blamed for, 4xx included.
	// It ends a run of failures.
	Success Outcome = iota
	// Neutral says nothing about the endpoint (the caller went away, or
	// the request was never sent for reasons of the proxy's own). It
	// neither counts nor ends a run.
	Neutral
	// LocalFailure is a failure the proxy observed rather than one the
	// endpoint answered with: no connection, a reset or refused stream,
	// the attempt's timeout.
	LocalFailure
	// GatewayFailure is a 502, 503 or 504 response.
	GatewayFailure
	// ServerError is any other 5xx response.
	ServerError
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Neutral:
		return "neutral"
	case LocalFailure:
		return "local-failure"
	case GatewayFailure:
		return "gateway-failure"
	case ServerError:
		return "server-error"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// ResponseOutcome classifies a response by its HTTP status and its gRPC
// status (-1 when there is none). gRPC answers errors with HTTP 200, so
// the gRPC statuses that mean the server failed count as their HTTP
// equivalents: UNAVAILABLE and DEADLINE_EXCEEDED as gateway failures
// (503, 504), UNKNOWN, INTERNAL and DATA_LOSS as server errors (500).
func ResponseOutcome(status, grpcStatus int) Outcome {
	switch {
	case status == 502 || status == 503 || status == 504:
		return GatewayFailure
	case status >= 500 && status <= 599:
		return ServerError
	}
	switch grpcStatus {
	case 4, 14: // DEADLINE_EXCEEDED, UNAVAILABLE
		return GatewayFailure
	case 2, 13, 15: // UNKNOWN, INTERNAL, DATA_LOSS
		return ServerError
	}
	return Success
}

// OutcomeSet is a set of outcomes.
type OutcomeSet uint8

// Outcomes returns the set holding os.
func Outcomes(os ...Outcome) OutcomeSet {
	var s OutcomeSet
	for _, o := range os {
		if o <= ServerError {
			s |= 1 << o
		}
	}
	return s
}

// Has reports whether o is in s.
func (s OutcomeSet) Has(o Outcome) bool { return o <= ServerError && s&(1<<o) != 0 }

// Config tunes detection. The zero value is the defaults.
type Config struct {
	// Consecutive is how many failures in a row eject an endpoint. 0
	// means DefaultConsecutive; negative never ejects.
	Consecutive int
	// Failures are the outcomes that count as failures; any other outcome
	// but Neutral ends a run. 0 means DefaultFailures. Success and Neutral
	// are ignored here.
	Failures OutcomeSet
	// BaseEjection is the first ejection's length, and the step by which
	// later ones grow. 0 means DefaultBaseEjection.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length, and is how long an endpoint
	// must go without ejection for its count to be forgotten. 0 means
	// DefaultMaxEjection; less than BaseEjection means BaseEjection.
	MaxEjection time.Duration
	// MaxEjectionPercent is the largest share of a set's endpoints that
	// may be ejected at once, rounded down: 50 allows 1 of 2 or 3
	// endpoints, and none of 1. 0 means DefaultMaxEjectionPercent.
	MaxEjectionPercent int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports a Config that cannot mean anything.
func (c Config) Validate() error {
	var errs []error
	if c.BaseEjection < 0 {
		errs = append(errs, fmt.Errorf("outlier: BaseEjection %v is negative", c.BaseEjection))
	}
	if c.MaxEjection < 0 {
		errs = append(errs, fmt.Errorf("outlier: MaxEjection %v is negative", c.MaxEjection))
	}
	if c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100 {
		errs = append(errs, fmt.Errorf("outlier: MaxEjectionPercent %d is not within 0-100", c.MaxEjectionPercent))
	}
	if c.Failures.Has(Success) || c.Failures.Has(Neutral) {
		errs = append(errs, errors.New("outlier: Failures may not hold Success or Neutral"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Consecutive == 0 {
		c.Consecutive = DefaultConsecutive
	}
	c.Consecutive = min(c.Consecutive, math.MaxInt32)
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.BaseEjection == 0 {
		c.BaseEjection = DefaultBaseEjection
	}
	if c.MaxEjection == 0 {
		c.MaxEjection = DefaultMaxEjection
	}
	c.MaxEjection = max(c.MaxEjection, c.BaseEjection)
	if c.MaxEjectionPercent == 0 {
		c.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Stats are a Detector's counters, for metrics.
type Stats struct {
	// Members is the size of the set.
	Members int
	// Ejected is how many members are ejected now.
	Ejected int
	// Ejections counts ejections since the Detector was made.
	Ejections uint64
	// SkippedByCap counts ejections MaxEjectionPercent prevented.
	SkippedByCap uint64
}

// Detector watches one set of endpoints (one service port): it holds the
// Monitors of the set's members and decides their ejections, keeping to
// MaxEjectionPercent of the set.
type Detector struct {
	cfg   Config
	epoch time.Time
	// latest is the latest ejection deadline handed out (see since), so
	// that AnyEjected answers without visiting every member.
	latest atomic.Int64

	ejections, skipped atomic.Uint64

	mu      sync.Mutex // guards members and each Monitor's ejections and member
	members []*Monitor
}

// NewDetector returns a Detector for an empty set.
func NewDetector(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Detector{cfg: cfg, epoch: cfg.Now()}, nil
}

// Now reads the Detector's clock.
func (d *Detector) Now() time.Time { return d.cfg.Now() }

// since turns a time into nanoseconds since the Detector was made, the
// unit in which ejection deadlines are kept (atomically, and on the
// monotonic clock when the clock has one). Times before the epoch count
// as the epoch, so every deadline is positive and 0 can mean "never".
func (d *Detector) since(t time.Time) int64 { return max(int64(t.Sub(d.epoch)), 0) }

// AnyEjected reports whether any endpoint that was in the set when it was
// ejected is still ejected at now. False means no member needs checking.
func (d *Detector) AnyEjected(now time.Time) bool { return d.since(now) < d.latest.Load() }

// NewMonitor returns a Monitor for an endpoint of the set. It takes part
// in the cap, and can be ejected, once SetMembers lists it.
func (d *Detector) NewMonitor() *Monitor { return &Monitor{d: d} }

// SetMembers replaces the set. Monitors it no longer lists stop counting
// against the cap, and their reports no longer eject them.
func (d *Detector) SetMembers(ms []*Monitor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.members {
		m.member = false
	}
	d.members = d.members[:0]
	for _, m := range ms {
		if m.d != d || m.member {
			continue // another set's, or listed twice
		}
		m.member = true
		d.members = append(d.members, m)
	}
}

// Stats returns the counters and how many members are ejected now.
func (d *Detector) Stats() Stats {
	now := d.since(d.cfg.Now())
	d.mu.Lock()
	defer d.mu.Unlock()
	return Stats{
		Members:      len(d.members),
		Ejected:      d.ejectedLocked(now),
		Ejections:    d.ejections.Load(),
		SkippedByCap: d.skipped.Load(),
	}
}

func (d *Detector) ejectedLocked(now int64) int {
	n := 0
	for _, m := range d.members {
		if now < m.until.Load() {
			n++
		}
	}
	return n
}

// eject decides whether m, which has just reached Consecutive failures at
// now, is ejected.
func (d *Detector) eject(m *Monitor, now int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m.consecutive.Load() < int32(d.cfg.Consecutive) || now < m.until.Load() {
		return // a success or another failure's ejection got here first
	}
	// Either way the run is used up: after a skipped ejection the endpoint
	// needs a fresh run of failures to be considered again.
	m.consecutive.Store(0)
	if !m.member {
		return
	}
	if (d.ejectedLocked(now)+1)*100 > d.cfg.MaxEjectionPercent*len(d.members) {
		d.skipped.Add(1)
		return
	}
	if prev := m.until.Load(); prev != 0 && now-prev >= int64(d.cfg.MaxEjection) {
		m.ejections = 0 // healthy for a whole MaxEjection: start again
	}
	m.ejections++
	length := d.cfg.MaxEjection
	if k := time.Duration(m.ejections); k <= d.cfg.MaxEjection/d.cfg.BaseEjection {
		length = d.cfg.BaseEjection * k // cannot overflow: at most MaxEjection
	}
	until := now + int64(length)
	if until < now { // overflow: a clock at the end of time
		until = math.MaxInt64
	}
	m.until.Store(until)
	if until > d.latest.Load() {
		d.latest.Store(until) // under mu: no lost update
	}
	d.ejections.Add(1)
}

// Monitor is one endpoint's health, as seen from the requests sent to it.
type Monitor struct {
	d           *Detector
	consecutive atomic.Int32
	// until is the end of the current or last ejection in Detector.since
	// units; 0 if never ejected.
	until atomic.Int64

	ejections int  // under d.mu: ejections since the count was last forgotten
	member    bool // under d.mu
}

// Report records how a request to the endpoint ended. Failures that end
// while the endpoint is ejected (requests sent before the ejection) are
// not counted: they say nothing new.
func (m *Monitor) Report(o Outcome) {
	d := m.d
	switch {
	case o == Neutral || o > ServerError:
		return
	case !d.cfg.Failures.Has(o):
		if m.consecutive.Load() != 0 { // spare the cache line when nothing changes
			m.consecutive.Store(0)
		}
		return
	case d.cfg.Consecutive < 0:
		return
	}
	now := d.since(d.cfg.Now())
	if now < m.until.Load() {
		return
	}
	if m.consecutive.Add(1) >= int32(d.cfg.Consecutive) {
		d.eject(m, now)
	}
}

// Ejected reports whether the endpoint is ejected now.
func (m *Monitor) Ejected() bool { return m.EjectedAt(m.d.cfg.Now()) }

// EjectedAt reports whether the endpoint is ejected at now: one clock
// reading serves a whole scan of endpoints.
func (m *Monitor) EjectedAt(now time.Time) bool { return m.d.since(now) < m.until.Load() }
