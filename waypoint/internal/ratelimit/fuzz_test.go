package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// sfItem is one member of a structured-field List whose items are
// Strings, as the draft's two fields are.
type sfItem struct {
	name   string
	params map[string]any // int64, string, bool or token
}

type sfToken string

// parseSFList parses a structured-field List (RFC 9651 §4.2) of Items
// whose bare items are Strings, with Parameters of Integers, Strings,
// Tokens or Booleans: strictly, as a recipient must.
func parseSFList(s string) ([]sfItem, error) {
	p := &sfParser{s: strings.Trim(s, " ")}
	var out []sfItem
	for {
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		p.ows()
		if p.done() {
			return out, nil
		}
		if p.s[p.i] != ',' {
			return nil, fmt.Errorf("at %d: want ',' after a list member", p.i)
		}
		p.i++
		p.ows()
		if p.done() {
			return nil, errors.New("trailing comma")
		}
	}
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

func (p *sfParser) ows() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bare()
	if err != nil {
		return sfItem{}, err
	}
	name, ok := v.(string)
	if !ok {
		return sfItem{}, fmt.Errorf("item %v is not a String", v)
	}
	it := sfItem{name: name, params: map[string]any{}}
	for !p.done() && p.s[p.i] == ';' {
		p.i++
		for !p.done() && p.s[p.i] == ' ' {
			p.i++
		}
		k, err := p.key()
		if err != nil {
			return sfItem{}, err
		}
		var val any = true
		if !p.done() && p.s[p.i] == '=' {
			p.i++
			if val, err = p.bare(); err != nil {
				return sfItem{}, err
			}
		}
		it.params[k] = val
	}
	return it, nil
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if p.done() || !(p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] == '*') {
		return "", fmt.Errorf("at %d: bad key start", p.i)
	}
	for !p.done() && strings.IndexByte("abcdefghijklmnopqrstuvwxyz0123456789_-.*", p.s[p.i]) >= 0 {
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) bare() (any, error) {
	if p.done() {
		return nil, errors.New("missing value")
	}
	switch c := p.s[p.i]; {
	case c == '"':
		p.i++
		var b strings.Builder
		for {
			if p.done() {
				return nil, errors.New("unterminated string")
			}
			c := p.s[p.i]
			p.i++
			switch {
			case c == '\\':
				if p.done() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
					return nil, errors.New("bad escape")
				}
				b.WriteByte(p.s[p.i])
				p.i++
			case c == '"':
				return b.String(), nil
			case c < 0x20 || c > 0x7e:
				return nil, fmt.Errorf("byte %#x in a string", c)
			default:
				b.WriteByte(c)
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		start := p.i
		if c == '-' {
			p.i++
		}
		digits := p.i
		for !p.done() && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if n := p.i - digits; n == 0 || n > 15 {
			return nil, fmt.Errorf("integer of %d digits", n)
		}
		if !p.done() && p.s[p.i] == '.' {
			return nil, errors.New("decimal")
		}
		return strconv.ParseInt(p.s[start:p.i], 10, 64)
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			p.i += 2
			return p.s[p.i-1] == '1', nil
		}
		return nil, errors.New("bad boolean")
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*':
		start := p.i
		for !p.done() && (strings.IndexByte("!#$%&'*+-.^_`|~:/", p.s[p.i]) >= 0 ||
			p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] >= 'A' && p.s[p.i] <= 'Z') {
			p.i++
		}
		return sfToken(p.s[start:p.i]), nil
	}
	return nil, fmt.Errorf("at %d: unexpected %q", p.i, p.s[p.i])
}

// checkFields checks that h holds the draft's fields as this package makes
// them: one String item each, naming the same policy, with non-negative
// Integers q, w ≥ 1, r and t, and a Retry-After of whole seconds ≥ 1
// and ≥ t when refused.
func checkFields(h http.Header, refused bool) error {
	pol, err := parseSFList(h.Get(HeaderRateLimitPolicy))
	if err != nil || len(pol) != 1 {
		return fmt.Errorf("RateLimit-Policy %q: %v", h.Get(HeaderRateLimitPolicy), err)
	}
	rl, err := parseSFList(h.Get(HeaderRateLimit))
	if err != nil || len(rl) != 1 {
		return fmt.Errorf("RateLimit %q: %v", h.Get(HeaderRateLimit), err)
	}
	if pol[0].name != rl[0].name {
		return fmt.Errorf("fields name %q and %q", pol[0].name, rl[0].name)
	}
	q, qok := pol[0].params["q"].(int64)
	w, wok := pol[0].params["w"].(int64)
	r, rok := rl[0].params["r"].(int64)
	t, tok := rl[0].params["t"].(int64)
	if !qok || !wok || !rok || !tok || q < 0 || w < 1 || r < 0 || t < 0 || len(pol[0].params) != 2 || len(rl[0].params) != 2 {
		return fmt.Errorf("parameters %v and %v", pol[0].params, rl[0].params)
	}
	ra := h.Get(HeaderRetryAfter)
	if !refused {
		if ra != "" {
			return fmt.Errorf("Retry-After %q on an allowed request", ra)
		}
		return nil
	}
	n, err := strconv.ParseUint(ra, 10, 64)
	if err != nil || n < 1 || int64(n) < t || strings.TrimLeft(ra, "0123456789") != "" {
		return fmt.Errorf("Retry-After %q with t=%d", ra, t)
	}
	return nil
}

// The fields produced always parse as the draft's structured fields, and
// carry the name and numbers given.
func FuzzFields(f *testing.F) {
	f.Add("ns/limit", uint64(10), uint64(1), uint64(3), int64(time.Second), true)
	f.Add(`we"ird\name`, uint64(0), uint64(0), uint64(0), int64(-1), false)
	f.Add("ünïcode\x00\r\n", uint64(math.MaxUint64), uint64(math.MaxUint64), uint64(math.MaxUint64), int64(math.MaxInt64), true)
	f.Fuzz(func(t *testing.T, name string, q, window, remaining uint64, wait int64, refused bool) {
		qh := newQuotaHeader(name, q, window)
		h := status{h: &qh, remaining: remaining, wait: time.Duration(wait)}.verdict(!refused).Header()
		if err := checkFields(h, refused); err != nil {
			t.Fatal(err)
		}
		pol, _ := parseSFList(h.Get(HeaderRateLimitPolicy))
		rl, _ := parseSFList(h.Get(HeaderRateLimit))
		if want := sanitized(name); pol[0].name != want {
			t.Errorf("name %q came out as %q, want %q", name, pol[0].name, want)
		}
		if pol[0].params["q"] != int64(min(q, maxSFInteger)) || pol[0].params["w"] != int64(max(min(window, maxSFInteger), 1)) ||
			rl[0].params["r"] != int64(min(remaining, maxSFInteger)) || rl[0].params["t"] != int64(min(seconds(time.Duration(wait)), maxSFInteger)) {
			t.Errorf("numbers %d %d %d %d came out as %v %v", q, window, remaining, wait, pol[0].params, rl[0].params)
		}
	})
}

// sanitized is name with every byte a String cannot hold replaced by '?'.
func sanitized(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// A bucket grants no more than its burst plus what the rate earned, and
// gains its next token exactly when it says.
func FuzzBucket(f *testing.F) {
	f.Add(uint32(10), uint32(1000), uint32(5), []byte{1, 2, 3, 200, 0, 17})
	f.Add(uint32(3), uint32(1000), uint32(1), []byte{255, 255, 1})
	f.Add(uint32(math.MaxUint32), uint32(math.MaxUint32), uint32(999), []byte{9})
	f.Fuzz(func(t *testing.T, n, intervalMs, burst uint32, steps []byte) {
		q, _ := newQuota("ns/f", false, n, intervalMs, burst%1000+1) // small, so that draining it is quick
		r := q.rate
		b := r.fill(0)
		var now int64
		granted := uint64(0)
		for _, s := range steps {
			now += int64(s) * int64(s) * int64(time.Millisecond) / 7
			for {
				ok, _, _ := b.take(r, now)
				if !ok {
					break
				}
				granted++
			}
			if r.interval > 0 {
				if earned := scale(uint64(now), r.n, r.interval); granted > r.burst+earned {
					t.Fatalf("granted %d by %d ns, more than burst %d + earned %d", granted, now, r.burst, earned)
				}
			} else if granted != 0 {
				t.Fatalf("a refuse-all bucket granted %d", granted)
			}
			wait := b.untilNext(r)
			if wait == neverRefills {
				continue
			}
			if wait <= 0 {
				t.Fatalf("empty bucket says next token in %v", wait)
			}
			early, onTime := b, b
			if ok, _, _ := early.take(r, now+int64(wait)-1); ok {
				t.Fatalf("a token 1 ns before the %v it announced", wait)
			}
			if ok, _, _ := onTime.take(r, now+int64(wait)); !ok {
				t.Fatalf("no token after the %v it announced", wait)
			}
		}
	})
}

// Update with any RateLimit entries never panics; Limit then answers
// with a valid verdict, and each policy holds at most MaxKeys buckets.
func FuzzUpdate(f *testing.F) {
	seed := func(limits ...*waypointapi.RateLimit) {
		b, err := proto.Marshal(&waypointapi.Service{RateLimits: limits})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "x-tenant", uint8(20))
	}
	withOverride := perSecond("ns/o", 2, 3, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	withOverride.Overrides = []*waypointapi.RateLimitOverride{{Principals: []string{alice.String(), ""}, Requests: 1}}
	routeRule := perSecond("ns/r", 1, 1, waypointapi.RateLimitKey_HEADER)
	routeRule.Route, routeRule.Rule, routeRule.Key.Header = "ns/api", "x", "x-tenant"
	seed(perSecond("ns/a", 1, 1, waypointapi.RateLimitKey_SOURCE_IP), withOverride, routeRule)
	seed(&waypointapi.RateLimit{Policy: "ns/g", Mode: waypointapi.RateLimit_GLOBAL, Requests: 3, FillIntervalMs: 90_000, FailureMode: 7})
	seed(&waypointapi.RateLimit{Route: "nonsense", Rule: "x", Key: &waypointapi.RateLimitKey{Type: 9, Header: "bad header"}})
	const maxKeys = 8
	f.Fuzz(func(t *testing.T, data []byte, header string, requests uint8) {
		var msg waypointapi.Service
		if err := proto.Unmarshal(data, &msg); err != nil {
			return
		}
		svc := service(msg.GetRateLimits()...)
		l := newLimiter(t, newFakeClock(), Options{MaxKeys: maxKeys}, waypoint(svc, svc))
		l.Update(waypoint(svc)) // a second push, keeping buckets

		var rules []*config.Rule
		peers := []spiffeid.ID{{}, alice}
		for _, rl := range svc.RateLimits {
			ns, name, _ := strings.Cut(rl.GetRoute(), "/")
			rules = append(rules, &config.Rule{Route: config.RouteRef{Kind: "HTTPRoute", Namespace: ns, Name: name}, Name: rl.GetRule()})
			for _, o := range rl.GetOverrides() {
				for _, p := range o.GetPrincipals() {
					if id, err := spiffeid.FromString(p); err == nil {
						peers = append(peers, id)
					}
				}
			}
		}
		rules = append(rules, nil)
		for i := range int(requests) {
			c := call{
				rule:   rules[i%len(rules)],
				peer:   peers[i%len(peers)],
				src:    netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
				header: http.Header{http.CanonicalHeaderKey(header): {strconv.Itoa(i)}},
			}
			v := l.Limit(context.Background(), c.request(svc))
			switch {
			case v.Allowed && v.Header() == nil:
			case v.Allowed || v.Status == http.StatusTooManyRequests:
				if err := checkFields(v.Header(), !v.Allowed); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			case v.Status == http.StatusInternalServerError && v.Header() == nil:
			default:
				t.Fatalf("request %d: verdict %+v", i, v)
			}
		}
		for key, st := range l.snap.Load().states {
			if n := st.buckets.len(); n > maxKeys {
				t.Fatalf("policy %q holds %d buckets, more than %d", key, n, maxKeys)
			}
		}
	})
}
