package outlier

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newSet returns a detector on clk with n member monitors.
func newSet(t testing.TB, cfg Config, clk *clock, n int) (*Detector, []*Monitor) {
	t.Helper()
	cfg.Now = clk.Now
	d, err := NewDetector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ms := make([]*Monitor, n)
	for i := range ms {
		ms[i] = d.NewMonitor()
	}
	d.SetMembers(ms)
	return d, ms
}

func report(m *Monitor, o Outcome, times int) {
	for range times {
		m.Report(o)
	}
}

func TestEjectsAfterConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name        string
		consecutive int
		outcome     Outcome
		want        int // failures that eject; 0: never
	}{
		{"default five local failures", 0, LocalFailure, 5},
		{"default five 503s", 0, GatewayFailure, 5},
		{"default five 500s", 0, ServerError, 5},
		{"one", 1, LocalFailure, 1},
		{"three", 3, ServerError, 3},
		{"negative never ejects", -1, LocalFailure, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			_, ms := newSet(t, Config{Consecutive: tt.consecutive}, clk, 4)
			m := ms[0]
			for i := 1; i <= 20; i++ {
				m.Report(tt.outcome)
				if got, want := m.EjectedAt(clk.Now()), tt.want != 0 && i >= tt.want; got != want {
					t.Fatalf("after %d failures: ejected = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestSuccessEndsTheRun(t *testing.T) {
	tests := []struct {
		name    string
		between Outcome
		ejected bool
	}{
		{"success resets", Success, false},
		{"neutral does not reset", Neutral, true},
		{"an unknown outcome is neutral", Outcome(200), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			_, ms := newSet(t, Config{}, clk, 4)
			report(ms[0], LocalFailure, 4)
			ms[0].Report(tt.between)
			ms[0].Report(LocalFailure)
			if got := ms[0].EjectedAt(clk.Now()); got != tt.ejected {
				t.Fatalf("ejected = %v, want %v", got, tt.ejected)
			}
		})
	}
}

func TestFailuresConfig(t *testing.T) {
	clk := newClock()
	_, ms := newSet(t, Config{Failures: Outcomes(LocalFailure)}, clk, 4)
	m := ms[0]
	report(m, ServerError, 10)
	report(m, GatewayFailure, 10)
	if m.EjectedAt(clk.Now()) {
		t.Fatal("5xx ejected an endpoint when only local failures count")
	}
	// A 5xx is an answer: it ends a run of connection failures.
	report(m, LocalFailure, 4)
	m.Report(ServerError)
	report(m, LocalFailure, 4)
	if m.EjectedAt(clk.Now()) {
		t.Fatal("an uncounted outcome did not end the run")
	}
	m.Report(LocalFailure)
	if !m.EjectedAt(clk.Now()) {
		t.Fatal("five local failures in a row did not eject")
	}
}

func TestEjectionLengthGrowsAndDecays(t *testing.T) {
	clk := newClock()
	_, ms := newSet(t, Config{}, clk, 4)
	m := ms[0]
	// Each ejection lasts 30 s times the ejections so far, up to 300 s;
	// the endpoint fails again as soon as it is back.
	for i, want := range []time.Duration{30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300} {
		want *= time.Second
		report(m, LocalFailure, 5)
		if !m.EjectedAt(clk.Now()) {
			t.Fatalf("ejection %d: not ejected", i+1)
		}
		clk.Advance(want - time.Nanosecond)
		if !m.EjectedAt(clk.Now()) {
			t.Fatalf("ejection %d: back before %v", i+1, want)
		}
		clk.Advance(time.Nanosecond)
		if m.EjectedAt(clk.Now()) {
			t.Fatalf("ejection %d: still ejected after %v", i+1, want)
		}
	}
	// Healthy for a whole MaxEjection: the count is forgotten.
	clk.Advance(DefaultMaxEjection)
	report(m, LocalFailure, 5)
	clk.Advance(DefaultBaseEjection)
	if m.EjectedAt(clk.Now()) {
		t.Fatal("ejection after a long healthy spell did not start again at BaseEjection")
	}
	// Healthy for less than that: the count stands (1, so 60 s now).
	clk.Advance(DefaultMaxEjection - time.Second)
	report(m, LocalFailure, 5)
	clk.Advance(DefaultBaseEjection)
	if !m.EjectedAt(clk.Now()) {
		t.Fatal("the count was forgotten too early")
	}
}

func TestFailuresWhileEjectedAreNotCounted(t *testing.T) {
	clk := newClock()
	_, ms := newSet(t, Config{}, clk, 4)
	m := ms[0]
	report(m, LocalFailure, 5)
	report(m, LocalFailure, 4) // requests sent before the ejection
	clk.Advance(DefaultBaseEjection)
	m.Report(LocalFailure)
	if m.EjectedAt(clk.Now()) {
		t.Fatal("failures that ended during the ejection counted towards the next")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		members, percent, want int
	}{
		{1, 0, 0},
		{2, 0, 1},
		{3, 0, 1},
		{4, 0, 2},
		{5, 0, 2},
		{10, 0, 5},
		{1, 100, 1},
		{3, 100, 3},
		{4, 30, 1},
		{3, 30, 0},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			clk := newClock()
			d, ms := newSet(t, Config{MaxEjectionPercent: tt.percent}, clk, tt.members)
			for _, m := range ms {
				report(m, LocalFailure, 5)
			}
			st := d.Stats()
			want := Stats{Members: tt.members, Ejected: tt.want, Ejections: uint64(tt.want), SkippedByCap: uint64(tt.members - tt.want)}
			if st != want {
				t.Fatalf("%d members, %d%%: stats %+v, want %+v", tt.members, tt.percent, st, want)
			}
			// A skipped endpoint needs a fresh run to be considered again.
			report(ms[len(ms)-1], LocalFailure, 4)
			if got := d.Stats().SkippedByCap; got != want.SkippedByCap {
				t.Fatalf("skipped = %d after 4 more failures, want %d", got, want.SkippedByCap)
			}
		})
	}
}

func TestCapFreesUpWhenEjectionsEnd(t *testing.T) {
	clk := newClock()
	d, ms := newSet(t, Config{}, clk, 2)
	report(ms[0], LocalFailure, 5)
	report(ms[1], LocalFailure, 5)
	if ms[1].EjectedAt(clk.Now()) {
		t.Fatal("both of two endpoints ejected")
	}
	clk.Advance(DefaultBaseEjection)
	report(ms[1], LocalFailure, 5)
	if !ms[1].EjectedAt(clk.Now()) {
		t.Fatal("the second endpoint was not ejected once the first came back")
	}
	if got := d.Stats(); got.Ejected != 1 || got.Ejections != 2 || got.SkippedByCap != 1 {
		t.Fatalf("stats %+v", got)
	}
}

func TestMembership(t *testing.T) {
	clk := newClock()
	d, ms := newSet(t, Config{MaxEjectionPercent: 100}, clk, 2)
	stranger := d.NewMonitor()
	report(stranger, LocalFailure, 5)
	if stranger.EjectedAt(clk.Now()) {
		t.Fatal("a monitor outside the set was ejected")
	}
	other, _ := NewDetector(Config{Now: clk.Now})
	foreign := other.NewMonitor()
	d.SetMembers([]*Monitor{ms[0], ms[0], foreign}) // ms[1] leaves
	if got := d.Stats().Members; got != 1 {
		t.Fatalf("members = %d, want 1 (duplicates and another set's monitor dropped)", got)
	}
	report(ms[1], LocalFailure, 5)
	if ms[1].EjectedAt(clk.Now()) {
		t.Fatal("a monitor that left the set was ejected")
	}
	report(ms[0], LocalFailure, 5)
	if !ms[0].EjectedAt(clk.Now()) {
		t.Fatal("the remaining member was not ejected")
	}
}

func TestAnyEjected(t *testing.T) {
	clk := newClock()
	d, ms := newSet(t, Config{}, clk, 4)
	if d.AnyEjected(clk.Now()) {
		t.Fatal("AnyEjected on a fresh set")
	}
	report(ms[2], LocalFailure, 5)
	if !d.AnyEjected(clk.Now()) || !ms[2].Ejected() {
		t.Fatal("AnyEjected or Ejected false during an ejection")
	}
	clk.Advance(DefaultBaseEjection)
	if d.AnyEjected(clk.Now()) || ms[2].Ejected() {
		t.Fatal("AnyEjected or Ejected true after the ejection ended")
	}
}

func TestClockBeforeEpoch(t *testing.T) {
	clk := newClock()
	_, ms := newSet(t, Config{}, clk, 4)
	clk.Advance(-time.Hour)
	report(ms[0], LocalFailure, 5)
	if !ms[0].EjectedAt(clk.Now()) {
		t.Fatal("a clock that went backwards prevented ejection")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{}, ""},
		{Config{Consecutive: -1, MaxEjectionPercent: 100, Failures: Outcomes(GatewayFailure)}, ""},
		{Config{BaseEjection: -1}, "BaseEjection"},
		{Config{MaxEjection: -1}, "MaxEjection"},
		{Config{MaxEjectionPercent: 101}, "MaxEjectionPercent"},
		{Config{MaxEjectionPercent: -1}, "MaxEjectionPercent"},
		{Config{Failures: Outcomes(Success, LocalFailure)}, "Failures"},
	}
	for _, tt := range tests {
		_, err := NewDetector(tt.cfg)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: error %v, want one naming %s", tt.cfg, err, tt.want)
		}
	}
}

func TestMaxEjectionBelowBase(t *testing.T) {
	clk := newClock()
	_, ms := newSet(t, Config{BaseEjection: time.Minute, MaxEjection: time.Second}, clk, 4)
	report(ms[0], LocalFailure, 5)
	clk.Advance(time.Minute - time.Nanosecond)
	if !ms[0].EjectedAt(clk.Now()) {
		t.Fatal("MaxEjection below BaseEjection shortened the ejection")
	}
}

func TestResponseOutcome(t *testing.T) {
	tests := []struct {
		status, grpc int
		want         Outcome
	}{
		{200, -1, Success},
		{404, -1, Success},
		{429, -1, Success},
		{500, -1, ServerError},
		{501, -1, ServerError},
		{502, -1, GatewayFailure},
		{503, -1, GatewayFailure},
		{504, -1, GatewayFailure},
		{599, -1, ServerError},
		{600, -1, Success},
		{200, 0, Success},
		{200, 5, Success}, // NOT_FOUND: the application's answer
		{200, 14, GatewayFailure},
		{200, 4, GatewayFailure},
		{200, 13, ServerError},
		{200, 2, ServerError},
		{200, 15, ServerError},
		{503, 0, GatewayFailure},
	}
	for _, tt := range tests {
		if got := ResponseOutcome(tt.status, tt.grpc); got != tt.want {
			t.Errorf("ResponseOutcome(%d, %d) = %v, want %v", tt.status, tt.grpc, got, tt.want)
		}
	}
}

func TestOutcomeSet(t *testing.T) {
	s := Outcomes(LocalFailure, ServerError, Outcome(9))
	for o := range Outcome(10) {
		if got, want := s.Has(o), o == LocalFailure || o == ServerError; got != want {
			t.Errorf("Has(%v) = %v, want %v", o, got, want)
		}
	}
	if Outcomes(LocalFailure, GatewayFailure, ServerError) != DefaultFailures {
		t.Error("DefaultFailures is not the three failure outcomes")
	}
}

// TestConcurrentReports checks, under -race, that the cap holds however
// reports interleave.
func TestConcurrentReports(t *testing.T) {
	clk := newClock()
	d, ms := newSet(t, Config{Consecutive: 3}, clk, 7)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 2000 {
				m := ms[(g+i)%len(ms)]
				if i%7 == 0 {
					m.Report(Success)
				} else {
					m.Report(LocalFailure)
				}
				if i%500 == 0 {
					clk.Advance(time.Second)
				}
				m.EjectedAt(clk.Now())
			}
		})
	}
	wg.Wait()
	if st := d.Stats(); st.Ejected > 3 || st.Ejections == 0 {
		t.Fatalf("stats %+v: want 1 to 3 of 7 ejected", st)
	}
}

func BenchmarkReportSuccess(b *testing.B) {
	_, ms := newSet(b, Config{}, newClock(), 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ms[3].Report(Success)
		}
	})
}

func BenchmarkReportFailure(b *testing.B) {
	_, ms := newSet(b, Config{Consecutive: 1 << 30}, newClock(), 10)
	b.ReportAllocs()
	for b.Loop() {
		ms[3].Report(LocalFailure)
	}
}
