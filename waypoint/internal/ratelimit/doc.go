// Package ratelimit decides whether the waypoint lets a request through
// its rate limits (Skiff's RateLimitPolicy, compiled by the control plane
// into the RateLimit entries of each service), and what the client is
// told about its remaining quota.
//
// # Which limits apply
//
// A request routed to a service meets every RateLimit of that service
// whose route is empty (the whole service), or whose route is the HTTPRoute
// of the rule the request matched and whose rule is empty or that rule's
// name. It goes on only if all of them allow it. A request that one of
// them refuses takes no tokens from the others. The entries of one
// policy share one set of buckets: a policy that targets two routes is one
// budget, and a request covered twice by one policy counts once.
//
// # Local mode
//
// A LOCAL limit is a token bucket in this waypoint replica: burst tokens
// at most, refilled at requests per fill interval, counted in integers so
// that a burst of B allows exactly B requests at once. The bucket is
// chosen by the policy's key: one for all clients (GLOBAL), or one per
// client SPIFFE identity (SOURCE_IDENTITY), per client IP address
// (SOURCE_IP, IPv4-mapped addresses counted as IPv4), or per value of a
// request header (HEADER; a request without the header shares the bucket
// of the empty value, so leaving the header out does not escape the
// limit). A client whose SPIFFE identity an override lists gets that
// override's limit instead, in a bucket of its own.
//
// Keys are kept as 64-bit keyed hashes, so a long header value costs no
// more than a short one. Each policy holds at most Options.MaxKeys buckets
// (DefaultMaxKeys). When a new client would exceed that, the bucket used
// least recently is dropped: a million distinct header values cannot grow
// memory without bound. The price is accuracy: a client whose bucket was
// dropped starts again with a full bucket, so while more clients than
// MaxKeys are active a client may get more than its limit.
//
// A configuration push keeps the buckets of every policy whose name,
// mode, limit, key and overrides did not change; a policy that changed
// starts with full buckets.
//
// # Global mode
//
// A GLOBAL limit is shared by every replica through Envoy's rate-limit
// service protocol (envoy.service.ratelimit.v3.RateLimitService), for
// instance github.com/envoyproxy/ratelimit backed by Redis, reached in
// plaintext gRPC at Options.ServiceAddress. Local limits are checked
// first; if they allow the request, one ShouldRateLimit call carries a
// descriptor per GLOBAL limit that applies, in domain Options.Domain
// (DefaultDomain, "skiff"). A descriptor's entries are
//
//	("policy", "<namespace>/<name>")
//	("source_identity", "<client SPIFFE ID>")   key SOURCE_IDENTITY, or a client an override lists
//	("source_ip", "<client IP>")                key SOURCE_IP
//	("header", "<the header's value>")          key HEADER
//
// (no second entry for a GLOBAL key), and its limit override is the
// policy's own rate: requests_per_unit per SECOND, MINUTE, HOUR, DAY,
// MONTH or YEAR. The service counts fixed windows of that unit, so a
// GLOBAL limit has no burst, and a fill interval that is not one unit is
// converted to the closest rate per unit (logged at Update). With an
// override in the descriptor envoyproxy/ratelimit needs no descriptor
// configuration, only the domain: a configuration file holding
// "domain: skiff" is enough. The service counts every descriptor of a
// call, so a request refused by one GLOBAL limit still counts against the
// others.
//
// If the service cannot be reached, answers with an error, answers
// something that does not fit (no limit for a descriptor: its
// configuration lacks the domain), or does not answer within
// Options.Timeout (DefaultTimeout, 20 ms as Envoy's), each GLOBAL limit
// that applies takes its failure mode: ALLOW (the default, as Envoy's)
// lets the request through as far as that limit is concerned; DENY
// refuses it with 500, the status Envoy's rate-limit filter answers with
// failure_mode_deny (its status_on_error default). A GLOBAL limit with no
// service address configured fails the same way. Failures are counted and
// logged at most once per Options.LogInterval, with their number.
//
// # The answer
//
// A refused request gets 429 with Retry-After (whole seconds, at least 1)
// and the fields of draft-ietf-httpapi-ratelimit-headers, naming the
// policy as a structured-field String:
//
//	RateLimit-Policy: "<namespace>/<name>";q=<requests>;w=<window seconds>
//	RateLimit: "<namespace>/<name>";r=<remaining>;t=<seconds>
//
// q and w are the limit's rate (requests per fill interval, over whole
// seconds; for a GLOBAL limit the service's requests per unit). r is the
// whole tokens left (the service's limit_remaining), t the seconds until
// more quota is available: until the bucket's next token (0 when it is
// full), or until the service's window resets. Retry-After is t, or 1
// if t is 0: the draft asks that it be no earlier than t. An allowed request gets the same
// two fields, without Retry-After, so that clients can pace themselves.
// When several limits apply, the fields name only one: the one with the
// least remaining quota (on a tie, the longer wait); when the request is
// refused, the refusing limit that frees up last.
//
// # Metrics
//
//   - skiff_rate_limited_requests_total{policy}: requests refused because
//     the policy was over its limit (MetricRateLimited).
//   - skiff_rate_limit_service_errors_total{reason}: calls to the
//     rate-limit service that gave no usable answer, reason being timeout,
//     unavailable, error, bad_response or no_service (MetricServiceErrors).
package ratelimit
