package ratelimit

import (
	"math"
	"math/bits"
	"time"
)

// rate is a token bucket's shape: burst tokens at most, refilled at n
// tokens per interval nanoseconds. n == 0 (or burst == 0) is a bucket that
// never holds a token: it refuses everything.
type rate struct {
	n, interval, burst uint64
}

// bucket is one key's token bucket. Whole tokens are counted exactly; frac
// is the refill earned towards the next token, in units of 1/interval of a
// token (nanoseconds × n), so that the refill has no rounding drift: n
// tokens arrive every interval, exactly.
type bucket struct {
	tokens uint64
	frac   uint64 // < interval
	last   int64  // nanoseconds since the Limiter's epoch
}

// fill returns a full bucket at now.
func (r rate) fill(now int64) bucket { return bucket{tokens: r.burst, last: now} }

// refill adds the tokens earned since b.last. A clock that went back
// earns nothing and does not move b.last back.
func (b *bucket) refill(r rate, now int64) {
	if now <= b.last {
		return
	}
	dt := uint64(now - b.last)
	b.last = now
	if b.tokens >= r.burst || r.n == 0 {
		b.tokens, b.frac = min(b.tokens, r.burst), 0
		return
	}
	// earned = dt×n + frac, in 1/interval tokens: 128 bits, so that an
	// hour-long interval and a billion requests do not overflow.
	hi, lo := bits.Mul64(dt, r.n)
	var c uint64
	lo, c = bits.Add64(lo, b.frac, 0)
	hi += c
	if hi >= r.interval { // more than 2⁶⁴ tokens earned
		b.tokens, b.frac = r.burst, 0
		return
	}
	q, rem := bits.Div64(hi, lo, r.interval)
	if q >= r.burst-b.tokens {
		b.tokens, b.frac = r.burst, 0
		return
	}
	b.tokens += q
	b.frac = rem
}

// take takes one token if there is one, after refilling. It reports
// whether it did, the whole tokens left, and the wait until the next token
// arrives (0 when the bucket is full).
func (b *bucket) take(r rate, now int64) (ok bool, remaining uint64, wait time.Duration) {
	b.refill(r, now)
	if b.tokens > 0 {
		b.tokens--
		ok = true
	}
	return ok, b.tokens, b.untilNext(r)
}

// give puts back a token taken by a request that another limit refused.
func (b *bucket) give(r rate) {
	if b.tokens < r.burst {
		b.tokens++
	}
	if b.tokens >= r.burst {
		b.frac = 0
	}
}

// untilNext is how long until the bucket gains a token: 0 when it is
// full, and a long time when it never refills.
func (b *bucket) untilNext(r rate) time.Duration {
	if b.tokens >= r.burst {
		if r.burst == 0 {
			return neverRefills
		}
		return 0
	}
	if r.n == 0 {
		return neverRefills
	}
	need := r.interval - b.frac // in 1/interval tokens; earned at n per ns
	ns := need / r.n
	if need%r.n != 0 {
		ns++
	}
	if ns > math.MaxInt64 {
		return neverRefills
	}
	return time.Duration(ns)
}

// neverRefills is the wait reported by a bucket that refuses everything:
// a day, long enough that a client backs off, short enough that a fixed
// configuration is picked up by a client that retries.
const neverRefills = 24 * time.Hour
