package retry_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
)

// Example shows how the proxy's forwarding loop fits the pieces together:
// each attempt picks an endpoint afresh, away from those already tried,
// and a retry needs the policy, the budget and a replayable body.
func Example() {
	// Long-lived: one registry per waypoint, one budget per service.
	reg, _ := balance.NewRegistry(outlier.Config{})
	pool := reg.Pool(balance.PoolKey{Service: "shop/cart.shop.svc.cluster.local", Port: 80})
	pool.Update([]netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.1:8080"),
		netip.MustParseAddrPort("10.0.0.2:8080"),
	})
	budget, _ := retry.NewBudget(retry.BudgetConfig{})
	// From the route: compiled once per configuration.
	policy := retry.FromRoute(nil)

	// Per request.
	body := retry.NewReplayBody(io.NopCloser(strings.NewReader("order=42")), 8, 0)
	defer body.Close()
	var refusing *balance.Host // the first endpoint tried refuses connections
	send := func(h *balance.Host, r io.Reader) retry.Outcome {
		if refusing == nil || refusing == h {
			refusing = h
			return retry.Outcome{Kind: retry.ConnectFailure, GRPCStatus: -1}
		}
		b, _ := io.ReadAll(r)
		fmt.Printf("sent %q\n", b)
		return retry.Outcome{Kind: retry.Response, Status: 200, GRPCStatus: -1}
	}

	budget.Deposit()
	rnd := rand.New(rand.NewPCG(1, 2)).Uint64
	var tried []*balance.Host
	for retries := 0; ; retries++ {
		h := pool.Pick(rnd, tried)
		r, ok := body.Replay()
		if h == nil || !ok {
			fmt.Println("no endpoint left, or the body cannot be sent again")
			return
		}
		h.Begin()
		o := send(h, r)
		h.End(o.Outlier())
		r.Close()
		fmt.Printf("attempt %d: %v\n", retries+1, o.Kind)
		if !policy.Retryable(o) || retries == policy.Attempts || !budget.Withdraw() {
			return
		}
		tried = append(tried, h)
		fmt.Printf("retrying in at least %v\n", policy.Delay(retries+1, nil))
		// The proxy waits here, on a timer and the request's context.
	}
	// Output:
	// attempt 1: connect-failure
	// retrying in at least 25ms
	// sent "order=42"
	// attempt 2: response
}
