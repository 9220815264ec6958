package ratelimit

import (
	"strconv"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
)

// Response header fields, in http.Header's canonical form so that the
// proxy can copy them into a response without canonicalizing again.
const (
	// HeaderRateLimit is the draft's RateLimit field:
	// "<policy>";r=<remaining>;t=<seconds until more quota>.
	HeaderRateLimit = "Ratelimit"
	// HeaderRateLimitPolicy is the draft's RateLimit-Policy field:
	// "<policy>";q=<quota>;w=<window seconds>.
	HeaderRateLimitPolicy = "Ratelimit-Policy"
	// HeaderRetryAfter is RFC 9110's Retry-After, in seconds.
	HeaderRetryAfter = "Retry-After"
)

// maxSFInteger is the largest Integer a structured field may carry (RFC
// 9651: at most 15 digits).
const maxSFInteger = 999_999_999_999_999

// appendSFString appends s as a structured-field String (RFC 9651 §3.3.3):
// quoted, with '"' and '\' escaped. A String holds only printable ASCII,
// so any other byte becomes '?': a policy name is "<namespace>/<name>"
// of DNS labels, and anything else came from a broken control plane.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendSFInt appends v as a structured-field Integer, capped at the
// largest one.
func appendSFInt(b []byte, v uint64) []byte {
	return strconv.AppendUint(b, min(v, maxSFInteger), 10)
}

// seconds rounds d up to whole seconds, the unit of every time in these
// fields; 0 and below are 0.
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	s := uint64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// quotaHeader is a quota's fixed part of the answer, made once per
// configuration: the RateLimit-Policy value, and the start of the
// RateLimit value.
type quotaHeader struct {
	// policy is the RateLimit-Policy field's value.
	policy string
	// prefix is `"<policy>";r=`.
	prefix string
}

// newQuotaHeader formats a policy named name allowing q requests per
// window seconds.
func newQuotaHeader(name string, q, window uint64) quotaHeader {
	b := appendSFString(nil, name)
	n := len(b)
	b = append(b, ";q="...)
	b = appendSFInt(b, q)
	b = append(b, ";w="...)
	b = appendSFInt(b, max(window, 1))
	return quotaHeader{
		policy: string(b),
		prefix: string(b[:n]) + ";r=",
	}
}

// status is where one limit stands for one request.
type status struct {
	h         *quotaHeader
	remaining uint64
	// wait is the time until the limit gives more quota: until the next
	// token of a bucket, or the window's reset of the rate-limit service.
	wait time.Duration
}

// rateLimit formats the RateLimit field's value.
func (s status) rateLimit() string {
	var buf [96]byte
	b := append(buf[:0], s.h.prefix...)
	b = appendSFInt(b, s.remaining)
	b = append(b, ";t="...)
	b = appendSFInt(b, seconds(s.wait))
	return string(b)
}

// verdict answers with the fields reporting s: allowed, or refused with
// 429 and Retry-After (seconds, at least 1).
func (s status) verdict(allowed bool) proxy.LimitVerdict {
	v := proxy.LimitVerdict{Allowed: allowed, RateLimit: s.rateLimit(), RateLimitPolicy: s.h.policy}
	if !allowed {
		v.Status = 429
		v.RetryAfter = strconv.FormatUint(max(seconds(s.wait), 1), 10)
	}
	return v
}
