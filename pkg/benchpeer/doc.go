// Package benchpeer runs the peers that Skiff's benchmarks measure it
// against (stunnel today; HAProxy and nginx for the L7 benchmarks) and the
// small workloads every path shares: a discard sink for bulk throughput, an
// echo server for request/response latency, and helpers to report
// percentiles and process memory.
//
// It is used only from benchmarks and tests.
package benchpeer
