package retry

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
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

func newBudget(t testing.TB, cfg BudgetConfig, clk *clock) *Budget {
	t.Helper()
	cfg.Now = clk.Now
	b, err := NewBudget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drain withdraws until the budget refuses, and returns how many it
// allowed.
func drain(b *Budget) int {
	n := 0
	for b.Withdraw() {
		n++
		if n > 1e6 {
			panic("budget never runs out")
		}
	}
	return n
}

func deposit(b *Budget, n int) {
	for range n {
		b.Deposit()
	}
}

func TestBudget(t *testing.T) {
	tests := []struct {
		name     string
		cfg      BudgetConfig
		requests int
		balance  float64
		want     int
	}{
		// Every one of 100 requests fails: 20% of them, plus the floor of
		// 10 a second over the 10 s window.
		{"defaults", BudgetConfig{}, 100, 120, 20 + 10*10},
		{"the floor alone, with no traffic", BudgetConfig{}, 0, 100, 100},
		{"no floor", BudgetConfig{MinPerSecond: -1}, 100, 20, 20},
		{"no ratio", BudgetConfig{Ratio: -1}, 100, 100, 100},
		{"neither", BudgetConfig{Ratio: -1, MinPerSecond: -1}, 100, 0, 0},
		{"a retry per request", BudgetConfig{Ratio: 1, MinPerSecond: -1}, 7, 7, 7},
		{"fractional floor", BudgetConfig{Ratio: -1, MinPerSecond: 0.5, Window: 4 * time.Second}, 0, 2, 2},
		{"ratio 0.1", BudgetConfig{Ratio: 0.1, MinPerSecond: -1}, 95, 9.5, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBudget(t, tt.cfg, newClock())
			deposit(b, tt.requests)
			if got := b.Balance(); got != tt.balance {
				t.Errorf("Balance = %v, want %v", got, tt.balance)
			}
			if got := drain(b); got != tt.want {
				t.Fatalf("allowed %d retries, want %d", got, tt.want)
			}
		})
	}
}

func TestBudgetWindowSlides(t *testing.T) {
	clk := newClock()
	b := newBudget(t, BudgetConfig{MinPerSecond: -1}, clk)
	deposit(b, 50)
	clk.Advance(5 * time.Second)
	deposit(b, 50)
	clk.Advance(4 * time.Second) // 9 s: every deposit counts
	if got := b.Balance(); got != 20 {
		t.Fatalf("balance after 9 s = %v, want 20", got)
	}
	clk.Advance(time.Second) // 10 s: the first 50 expired
	if got := b.Balance(); got != 10 {
		t.Fatalf("balance after 10 s = %v, want 10", got)
	}
	if got := drain(b); got != 10 {
		t.Fatalf("allowed %d, want 10", got)
	}
	clk.Advance(5 * time.Second) // 15 s: every deposit expired, and the withdrawals still count
	if got := b.Balance(); got != 0 {
		t.Fatalf("balance after 15 s = %v, want 0", got)
	}
	deposit(b, 25)
	if b.Withdraw() {
		t.Fatal("a withdrawal while the last 10 are still owed")
	}
	clk.Advance(5 * time.Second) // 20 s: the withdrawals expired too
	if got := drain(b); got != 5 {
		t.Fatalf("allowed %d, want 5", got)
	}
}

func TestBudgetFloorRefills(t *testing.T) {
	clk := newClock()
	b := newBudget(t, BudgetConfig{}, clk)
	if got := drain(b); got != 100 {
		t.Fatalf("allowed %d, want 100", got)
	}
	clk.Advance(5 * time.Second)
	if b.Withdraw() {
		t.Fatal("the floor refilled before the window passed")
	}
	clk.Advance(5 * time.Second)
	if got := drain(b); got != 100 {
		t.Fatalf("allowed %d once the withdrawals expired, want 100", got)
	}
	clk.Advance(time.Hour) // a jump far past the window empties it
	if got := drain(b); got != 100 {
		t.Fatalf("allowed %d after an hour, want 100", got)
	}
}

func TestBudgetClockBackwards(t *testing.T) {
	clk := newClock()
	b := newBudget(t, BudgetConfig{MinPerSecond: -1}, clk)
	clk.Advance(3 * time.Second)
	deposit(b, 10)
	clk.Advance(-time.Hour)
	deposit(b, 10)
	if got := drain(b); got != 4 {
		t.Fatalf("allowed %d, want 4", got)
	}
}

func TestNewBudgetErrors(t *testing.T) {
	tests := []struct {
		cfg  BudgetConfig
		want string
	}{
		{BudgetConfig{Ratio: math.NaN()}, "Ratio"},
		{BudgetConfig{Ratio: math.Inf(1)}, "Ratio"},
		{BudgetConfig{Ratio: 1e9}, "Ratio"},
		{BudgetConfig{MinPerSecond: math.Inf(-1)}, "MinPerSecond"},
		{BudgetConfig{MinPerSecond: 1e12}, "MinPerSecond"},
		{BudgetConfig{Window: -time.Second}, "Window"},
		{BudgetConfig{Window: 48 * time.Hour}, "Window"},
	}
	for _, tt := range tests {
		if _, err := NewBudget(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewBudget(%+v) error %v, want one naming %s", tt.cfg, err, tt.want)
		}
	}
}

// TestBudgetConcurrent checks under -race that concurrent withdrawals never
// overdraw, and that refused ones give back what they took.
func TestBudgetConcurrent(t *testing.T) {
	b := newBudget(t, BudgetConfig{}, newClock())
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				b.Deposit()
				if i%2 == 0 && b.Withdraw() {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 800 requests earn 160, the floor 100.
	if total := granted.Load() + int64(drain(b)); total != 260 {
		t.Fatalf("granted %d in all, want 260", total)
	}
}

func TestBudgetAllocations(t *testing.T) {
	b := newBudget(t, BudgetConfig{}, newClock())
	if n := testing.AllocsPerRun(100, func() { b.Deposit(); b.Withdraw() }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkBudget(b *testing.B) {
	budget, err := NewBudget(BudgetConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			budget.Deposit()
			if i%10 == 0 {
				budget.Withdraw()
			}
		}
	})
}
