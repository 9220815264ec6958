package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
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

func seeded(seed uint64) func() uint64 { return rand.New(rand.NewPCG(seed, 0x5eed)).Uint64 }

func addrs(n int) []netip.AddrPort {
	as := make([]netip.AddrPort, n)
	for i := range as {
		as[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)
	}
	return as
}

// newPool returns a pool of n endpoints on clk (nil: cfg.Now).
func newPool(t testing.TB, cfg outlier.Config, clk *clock, n int) (*Pool, []*Host) {
	t.Helper()
	if clk != nil {
		cfg.Now = clk.Now
	}
	r, err := NewRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Pool(PoolKey{Service: "ns/svc.ns.svc.cluster.local", Port: 80})
	p.Update(addrs(n))
	return p, p.Hosts()
}

func eject(h *Host) {
	for range outlier.DefaultConsecutive {
		h.Begin()
		h.End(outlier.LocalFailure)
	}
}

// binomialBounds returns the smallest interval [lo, hi] holding all but
// at most alpha/2 of Binomial(n, p) on each side.
func binomialBounds(n int, p, alpha float64) (lo, hi int) {
	lgn, _ := math.Lgamma(float64(n + 1))
	pmf := func(k int) float64 {
		a, _ := math.Lgamma(float64(k + 1))
		b, _ := math.Lgamma(float64(n - k + 1))
		return math.Exp(lgn - a - b + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
	}
	below := 0.0
	for lo = 0; below+pmf(lo) <= alpha/2; lo++ {
		below += pmf(lo)
	}
	above := 0.0
	for hi = n; above+pmf(hi) <= alpha/2; hi-- {
		above += pmf(hi)
	}
	return lo, hi
}

func TestPickBackendSplit(t *testing.T) {
	const draws = 2000
	backends := []config.Backend{{Name: "a", Weight: 90}, {Name: "b", Weight: 10}}
	lo, hi := binomialBounds(draws, 0.1, 0.001)
	if lo < 150 || hi > 250 { // the bound itself: 200 ± about 3.3 standard deviations
		t.Fatalf("99.9%% bound [%d, %d] for 200 ± 44 is wrong", lo, hi)
	}
	rnd := seeded(1)
	var got [2]int
	for range draws {
		got[PickBackend(backends, rnd)]++
	}
	if got[1] < lo || got[1] > hi {
		t.Fatalf("the 10%% backend got %d of %d, outside the 99.9%% bound [%d, %d]", got[1], draws, lo, hi)
	}
}

func TestPickBackend(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		want    []int // the indexes that may be drawn; nil: -1
	}{
		{"none", nil, nil},
		{"all zero", []uint32{0, 0, 0}, nil},
		{"single", []uint32{1}, []int{0}},
		{"single heavy", []uint32{math.MaxUint32}, []int{0}},
		{"zero weights never drawn", []uint32{0, 5, 0, 5, 0}, []int{1, 3}},
		{"zero weight beside a tiny one", []uint32{1, 0}, []int{0}},
		{"large weights do not overflow", []uint32{math.MaxUint32, math.MaxUint32, 0, math.MaxUint32}, []int{0, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backends := make([]config.Backend, len(tt.weights))
			for i, w := range tt.weights {
				backends[i].Weight = w
			}
			rnd := seeded(2)
			seen := map[int]bool{}
			for range 1000 {
				seen[PickBackend(backends, rnd)] = true
			}
			want := map[int]bool{-1: true}
			if tt.want != nil {
				want = map[int]bool{}
				for _, i := range tt.want {
					want[i] = true
				}
			}
			if fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Fatalf("drew %v, want exactly %v", seen, want)
			}
		})
	}
}

func TestPickBackendExtremeRandom(t *testing.T) {
	backends := []config.Backend{{Weight: 1}, {Weight: 0}, {Weight: 2}}
	for _, r := range []uint64{0, math.MaxUint64} {
		if got := PickBackend(backends, func() uint64 { return r }); got != 0 && got != 2 {
			t.Errorf("random %#x drew %d", r, got)
		}
	}
}

func TestPickPrefersLessLoaded(t *testing.T) {
	p, hs := newPool(t, outlier.Config{}, newClock(), 2)
	for range 5 {
		hs[0].Begin()
	}
	rnd := seeded(3)
	for range 100 {
		if got := p.Pick(rnd, nil); got != hs[1] {
			t.Fatalf("picked %v with %d in flight over one with %d", got.Addr, got.InFlight(), hs[1].InFlight())
		}
	}

	// Of three, the most loaded always loses its comparison, and the
	// least loaded wins both of its own.
	p, hs = newPool(t, outlier.Config{}, newClock(), 3)
	hs[1].Begin()
	for range 10 {
		hs[2].Begin()
	}
	picked := map[*Host]int{}
	for range 3000 {
		picked[p.Pick(rnd, nil)]++
	}
	if picked[hs[2]] != 0 || picked[hs[0]] <= picked[hs[1]] {
		t.Fatalf("picks by load 0, 1, 10: %d, %d, %d", picked[hs[0]], picked[hs[1]], picked[hs[2]])
	}
}

func TestPickSkipsTried(t *testing.T) {
	p, hs := newPool(t, outlier.Config{}, newClock(), 3)
	for range 3 {
		hs[1].Begin()
		hs[2].Begin()
	}
	rnd := seeded(4)
	tests := []struct {
		name  string
		tried []*Host
		may   []*Host
	}{
		// A retry after a connect failure goes elsewhere, even when the
		// failed endpoint is the least loaded.
		{"retry avoids the least loaded that failed", []*Host{hs[0]}, []*Host{hs[1], hs[2]}},
		{"two tried", []*Host{hs[2], hs[0]}, []*Host{hs[1]}},
		{"all tried", hs, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				got := p.Pick(rnd, tt.tried)
				if !contains(tt.may, got) {
					t.Fatalf("picked %v, want one of %v", got, tt.may)
				}
			}
		})
	}
}

func contains(hs []*Host, h *Host) bool {
	if h == nil {
		return len(hs) == 0
	}
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

func TestPickSkipsEjected(t *testing.T) {
	clk := newClock()
	p, hs := newPool(t, outlier.Config{}, clk, 4)
	eject(hs[0])
	if !hs[0].Ejected() {
		t.Fatal("not ejected")
	}
	rnd := seeded(5)
	for range 500 {
		if p.Pick(rnd, nil) == hs[0] {
			t.Fatal("picked an ejected endpoint")
		}
	}
	if st := p.Stats(); st.Ejected != 1 || st.Members != 4 {
		t.Fatalf("stats %+v", st)
	}
	clk.Advance(outlier.DefaultBaseEjection)
	seen := false
	for range 500 {
		seen = seen || p.Pick(rnd, nil) == hs[0]
	}
	if !seen {
		t.Fatal("an endpoint was not picked again after its ejection")
	}
}

func TestPickPanicMode(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		ejected []int
		tried   []int
		may     []int
	}{
		{"all ejected", 3, []int{0, 1, 2}, nil, []int{0, 1, 2}},
		{"all not tried are ejected", 3, []int{1, 2}, []int{0}, []int{1, 2}},
		{"one ejected, one tried", 3, []int{1}, []int{0}, []int{2}},
		{"single ejected", 1, []int{0}, nil, []int{0}},
		{"single ejected and tried", 1, []int{0}, []int{0}, nil},
		{"empty", 0, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, hs := newPool(t, outlier.Config{MaxEjectionPercent: 100}, newClock(), tt.n)
			for _, i := range tt.ejected {
				eject(hs[i])
			}
			var tried, may []*Host
			for _, i := range tt.tried {
				tried = append(tried, hs[i])
			}
			for _, i := range tt.may {
				may = append(may, hs[i])
			}
			rnd := seeded(6)
			for range 200 {
				if got := p.Pick(rnd, tried); !contains(may, got) {
					t.Fatalf("picked %v, want one of %v", got, may)
				}
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	p, hs := newPool(t, outlier.Config{}, newClock(), 3)
	hs[1].Begin()
	as := addrs(5)
	before := &p.Hosts()[0]
	p.Update(as[:3])
	if &p.Hosts()[0] != before {
		t.Fatal("an update that changed nothing replaced the hosts")
	}
	p.Update([]netip.AddrPort{as[1], {}, as[3], as[1], as[4]})
	got := p.Hosts()
	if len(got) != 3 || got[0] != hs[1] || got[1].Addr != as[3] || got[2].Addr != as[4] {
		t.Fatalf("hosts after update: %v", got)
	}
	if got[0].InFlight() != 1 {
		t.Fatal("a host that stayed lost its in-flight count")
	}
	if st := p.Stats(); st.Members != 3 {
		t.Fatalf("outlier members = %d, want 3", st.Members)
	}
	// A request to a host that left ends normally.
	hs[0].Begin()
	hs[0].End(outlier.Success)
	p.Update(nil)
	if p.Pick(seeded(7), nil) != nil {
		t.Fatal("picked from an empty pool")
	}
}

// TestUpdateForgets checks that an endpoint that leaves and comes back
// starts afresh, and that the cap counts the current set only.
func TestUpdateForgets(t *testing.T) {
	clk := newClock()
	p, hs := newPool(t, outlier.Config{}, clk, 2)
	eject(hs[0])
	as := addrs(2)
	p.Update(as[1:])
	p.Update(as)
	if p.Hosts()[1].Ejected() || p.Hosts()[1] == hs[0] {
		t.Fatal("an endpoint that came back kept its old state")
	}
}

func TestRegistry(t *testing.T) {
	if _, err := NewRegistry(outlier.Config{MaxEjectionPercent: 200}); err == nil {
		t.Fatal("NewRegistry accepted MaxEjectionPercent 200")
	}
	r, err := NewRegistry(outlier.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a := PoolKey{"ns/a", 80}
	b := PoolKey{"ns/a", 81}
	pa := r.Pool(a)
	if r.Pool(a) != pa || r.Pool(b) == pa {
		t.Fatal("Pool is not one per key")
	}
	pa.Update(addrs(3))
	got := map[PoolKey]int{}
	for k, st := range r.Stats() {
		got[k] = st.Members
	}
	if len(got) != 2 || got[a] != 3 || got[b] != 0 {
		t.Fatalf("stats: %v", got)
	}
	for range r.Stats() {
		break // stopping early is allowed
	}
	r.Prune(func(k PoolKey) bool { return k == b })
	if r.Pool(a) == pa {
		t.Fatal("a pruned pool was kept")
	}
	if r.Pool(b).Stats().Members != 0 {
		t.Fatal("the kept pool changed")
	}
}

// TestConcurrentUse runs picks, requests, failures, updates and pruning
// at once under -race, and checks that every Begin met its End.
func TestConcurrentUse(t *testing.T) {
	clk := newClock()
	r, err := NewRegistry(outlier.Config{Consecutive: 2, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := PoolKey{"ns/svc", 80}
	as := addrs(8)
	r.Pool(key).Update(as)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[*Host]bool{}
	for g := range 32 {
		wg.Go(func() {
			rnd := seeded(uint64(g))
			var tried []*Host
			for i := range 500 {
				h := r.Pool(key).Pick(rnd, tried)
				if h == nil {
					tried = tried[:0]
					continue
				}
				h.Begin()
				o := outlier.Success
				if i%3 == 0 {
					o = outlier.LocalFailure
					tried = append(tried, h)
				} else {
					tried = tried[:0]
				}
				h.End(o)
				mu.Lock()
				seen[h] = true
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			r.Pool(key).Update(as[i%3:])
			clk.Advance(time.Second)
			for range r.Stats() {
			}
		}
	})
	wg.Wait()
	for h := range seen {
		if n := h.InFlight(); n != 0 {
			t.Errorf("%v: %d in flight after every request ended", h.Addr, n)
		}
	}
}

func TestPickAllocations(t *testing.T) {
	clk := newClock()
	p, hs := newPool(t, outlier.Config{}, clk, 10)
	eject(hs[0])
	rnd := seeded(8)
	backends := []config.Backend{{Weight: 1}, {Weight: 3}}
	tried := []*Host{hs[1]}
	tests := []struct {
		name string
		f    func()
	}{
		{"backend", func() { PickBackend(backends, rnd) }},
		{"pick", func() { p.Pick(rnd, nil) }},
		{"pick with tried and ejected", func() { p.Pick(rnd, tried) }},
		{"begin and end", func() { hs[2].Begin(); hs[2].End(outlier.Success) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations", tt.name, n)
		}
	}
}

func BenchmarkPickBackend(b *testing.B) {
	backends := []config.Backend{{Weight: 80}, {Weight: 15}, {Weight: 5}}
	b.ReportAllocs()
	for b.Loop() {
		PickBackend(backends, rand.Uint64)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		for _, slow := range []bool{false, true} {
			b.Run(fmt.Sprintf("hosts=%d/ejected=%v", n, slow), func(b *testing.B) {
				p, hs := newPool(b, outlier.Config{}, nil, n)
				var tried []*Host
				if slow {
					eject(hs[0])
					tried = hs[1:2]
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						h := p.Pick(rand.Uint64, tried)
						h.Begin()
						h.End(outlier.Success)
					}
				})
			})
		}
	}
}
