// Package benchpeer runs the peers that Skiff's benchmarks measure it
// against, and the load and workloads every path shares, so that each
// benchmark compares Skiff with its peers in one run on one machine:
//
//   - stunnel, the mutual-TLS relay the HBONE benchmark compares with;
//   - HAProxy and nginx as HTTP reverse proxies (one worker, plaintext or
//     TLS 1.3 on both legs), an nginx origin serving files, and h2load as
//     the load generator for HTTP/1.1 and HTTP/2: the waypoint's peers;
//   - a discard sink for bulk throughput and an echo server for
//     request/response latency;
//   - what a benchmark reads about a process: CPU time and resident
//     memory of a process tree, pinning to
//     CPUs, and percentiles;
//   - Envoy's rate-limit service (envoyproxy/ratelimit) with Redis, for the
//     waypoint's global rate limits.
//
// It is used only from benchmarks and tests.
package benchpeer
