package retry

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero BudgetConfig fields.
const (
	DefaultRatio        = 0.2
	DefaultMinPerSecond = 10
	DefaultWindow       = 10 * time.Second
)

// budgetSlots is how many pieces the window is kept in: deposits expire a
// tenth of the window at a time.
const budgetSlots = 10

// unit is one retry in the Budget's fixed-point balance; a deposit is
// Ratio × unit. Decimal, so that the usual ratios (0.2, 0.1, 0.05) are
// exact.
const unit = 1_000_000

// BudgetConfig tunes a Budget. The zero value is the defaults.
type BudgetConfig struct {
	// Ratio is how many retries each request earns: 0.2 allows one retry
	// for every five requests. 0 means DefaultRatio; negative earns none.
	Ratio float64
	// MinPerSecond is a floor of retries per second, allowed with or
	// without traffic, so that a service with few requests can still
	// retry: a reserve of MinPerSecond × Window retries per window. 0
	// means DefaultMinPerSecond; negative means none.
	MinPerSecond float64
	// Window is how long deposits and withdrawals count. 0 means
	// DefaultWindow.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Budget caps retries to a share of requests over a sliding window, plus
// a floor (Finagle's and Linkerd's retry budget; tower's TpsBudget is the
// model). Every original request deposits, every retry withdraws, and a
// retry is allowed while the balance covers it. One Budget is shared by
// every request to a service; it is safe for concurrent use, and both
// calls are a few atomic operations.
//
// The window moves a tenth at a time: a deposit counts for between 0.9
// and 1 Window.
type Budget struct {
	now     func() time.Time
	epoch   time.Time
	slot    time.Duration // Window / budgetSlots
	deposit int64         // Ratio × unit
	reserve int64         // MinPerSecond × Window × unit

	// slots[g%budgetSlots] holds the deposits minus withdrawals of
	// generation g (the g-th slot-long interval since epoch), for the
	// generations up to gen.
	slots  [budgetSlots]atomic.Int64
	gen    atomic.Int64
	rotate sync.Mutex // serialises moving gen on
}

// NewBudget returns a Budget with an empty window, or an error naming a
// field that cannot be used.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	var errs []error
	if math.IsNaN(cfg.Ratio) || math.IsInf(cfg.Ratio, 0) || cfg.Ratio > 1000 {
		errs = append(errs, fmt.Errorf("retry: budget Ratio %v is not a number up to 1000", cfg.Ratio))
	}
	if math.IsNaN(cfg.MinPerSecond) || math.IsInf(cfg.MinPerSecond, 0) || cfg.MinPerSecond > 1e6 {
		errs = append(errs, fmt.Errorf("retry: budget MinPerSecond %v is not a number up to a million", cfg.MinPerSecond))
	}
	if cfg.Window < 0 || cfg.Window > 24*time.Hour {
		errs = append(errs, fmt.Errorf("retry: budget Window %v is not within 0 to 24h", cfg.Window))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	switch {
	case cfg.Ratio == 0:
		cfg.Ratio = DefaultRatio
	case cfg.Ratio < 0:
		cfg.Ratio = 0
	}
	switch {
	case cfg.MinPerSecond == 0:
		cfg.MinPerSecond = DefaultMinPerSecond
	case cfg.MinPerSecond < 0:
		cfg.MinPerSecond = 0
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Budget{
		now:     cfg.Now,
		epoch:   cfg.Now(),
		slot:    max(cfg.Window/budgetSlots, 1),
		deposit: int64(math.Round(cfg.Ratio * unit)),
		// At most 1e6 × 86400 × 1e6 ≈ 9e16: fits.
		reserve: int64(math.Round(cfg.MinPerSecond * cfg.Window.Seconds() * unit)),
	}
	return b, nil
}

// Deposit records an original request (not a retry).
func (b *Budget) Deposit() {
	b.slots[b.advance()%budgetSlots].Add(b.deposit)
}

// Withdraw takes one retry from the budget, and reports whether there
// was one to take. A false means do not retry.
func (b *Budget) Withdraw() bool {
	s := &b.slots[b.advance()%budgetSlots]
	// Take first, check after: concurrent withdrawals can then never
	// overdraw together; at worst one is refused that could have passed.
	s.Add(-unit)
	if b.balance() >= 0 {
		return true
	}
	s.Add(unit)
	return false
}

// Balance returns how many retries the budget allows now (for metrics).
func (b *Budget) Balance() float64 {
	b.advance()
	return float64(max(b.balance(), 0)) / unit
}

func (b *Budget) balance() int64 {
	sum := b.reserve
	for i := range b.slots {
		sum += b.slots[i].Load()
	}
	return sum
}

// advance moves the window on to now's generation, emptying the slots of
// generations that left it, and returns that generation.
func (b *Budget) advance() int64 {
	g := max(int64(b.now().Sub(b.epoch)/b.slot), 0)
	cur := b.gen.Load()
	if g <= cur { // a clock that went back counts as the present
		return cur
	}
	b.rotate.Lock()
	defer b.rotate.Unlock()
	cur = b.gen.Load()
	if g <= cur {
		return cur
	}
	for c := cur + 1; c <= g && c <= cur+budgetSlots; c++ {
		b.slots[c%budgetSlots].Store(0)
	}
	b.gen.Store(g)
	return g
}
