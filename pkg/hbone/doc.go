// Package hbone implements HBONE, the tunnel protocol of Istio's ambient
// mesh: one HTTP CONNECT stream per proxied TCP connection, multiplexed over
// a mutual-TLS HTTP/2 connection (port 15008), or over HTTP/3 on QUIC.
//
// Wire format (compatible with Istio's ztunnel):
//
//   - TLS 1.3 only, ALPN "h2" (TCP) or "h3" (QUIC), no SNI. Both sides
//     present X.509 SVIDs; identities are SPIFFE IDs in the URI SAN.
//   - One CONNECT request per tunnel; :authority is "<ip>:<port>" of the
//     destination (IPv6 in brackets). Headers "forwarded" (for="<ip:port>"),
//     "baggage" and "traceparent" are passed through.
//   - 200 opens the tunnel; 400 bad request or destination mismatch, 401
//     policy denial, 503 upstream failure; 405 answers a method other than
//     CONNECT.
//   - Key exchange: X25519MLKEM768 (hybrid post-quantum) is preferred on
//     both transports, with X25519 and P-256 for peers without it.
//
// # Choosing the transport
//
// A peer that accepts HBONE over QUIC says so on every answer to a
// CONNECT, over TCP and over QUIC, with an Alt-Svc field (RFC 7838):
//
//	alt-svc: h3=":15008"; ma=3600
//
// TransportDialer remembers it per peer address for ma seconds, and
// from then on dials that peer over QUIC: the first tunnel to a peer
// goes over TCP, the following ones over QUIC. A peer that advertises
// nothing, Istio's ztunnel among them, is always reached over TCP;
// "alt-svc: clear" or ma=0 withdraws an advertisement. The signal is
// carried by the peer itself, rather than pushed by the control plane,
// because only the peer knows whether it listens on UDP (its own
// hboneTransport setting, a pod's namespace set up by an older ztunnel),
// and because it keeps HBONE independent of any control plane: it works
// between Skiff and Istio peers, and in local mode, with no change to the
// workload API.
//
// Whenever QUIC is tried, TCP is tried too if the QUIC handshake has not
// finished after FallbackDelay (300ms), or at once if it failed (happy
// eyeballs, RFC 8305); the first connection set up carries the tunnel.
// When TCP wins, the peer is reached over TCP alone for FailureTTL (30s,
// doubling with each failure in a row, up to an hour), then QUIC is tried
// again; a blocked UDP path costs the delay once per period. A QUIC
// handshake that was only slow (a loaded peer, a certificate being
// issued) and finishes after TCP won ends that period at once: its
// connection carries the next tunnels. A TCP connection that loses is
// closed. Mode tcp neither serves nor dials QUIC; mode quic
// tries it toward every peer, advertised or not.
//
// The HTTP/2 side uses golang.org/x/net/http2's Framer and hpack but its own
// connection engine (h2conn.go): the x/net server resets the request side of
// a stream when a handler ends its response, so it cannot half-close a
// tunnel from the server side, which a byte-exact TCP proxy needs. It
// keeps x/net's guards against abusive peers: at most 10,000 frames queued
// on its own behalf (PING and SETTINGS acks, RST_STREAM, WINDOW_UPDATE),
// and at most MaxConcurrentStreams handlers running per connection, even
// for streams the peer reset, with 4x that waiting; beyond either, the
// peer is sent GOAWAY ENHANCE_YOUR_CALM and dropped.
//
// The same engine serves plain HTTP/2 (h2c) for what travels inside a
// tunnel: ServeH2C hands a proxy such as the waypoint every request, with
// net/http's Request and ResponseWriter, its body checked against its
// content-length and trailers kept both ways. It passes h2spec whole,
// and it is cheaper than net/http's HTTP/2 server: no goroutine of its
// own per connection to serialise frame writes, handler goroutines kept
// from one request to the next while the connection carries streams, and
// a small response leaving in one write, HEADERS, DATA and END_STREAM
// together. H2CClientConn sends requests on it the same way (the
// waypoint's requests to endpoints).
//
// A peer that stops reading stalls the frame being written to it, and
// with it every writer on the connection. As x/net/http2's
// WriteByteTimeout does, a write to which the peer takes no byte for
// WriteByteTimeout (ServerConfig, ClientConfig; 30s by default) closes
// the connection: the write and every tunnel on the connection fail with
// ErrWriteByteTimeout, and the writers waiting behind it (tunnel writes
// and closes, response HEADERS) wake up. A slow peer that keeps taking
// bytes is not cut: the socket's write deadline moves on as writes make
// progress (batchconn.go). Other waits end sooner: Dial with its context
// (a CONNECT half-written then closes the connection, whose framing it
// broke), and a graceful Shutdown's GOAWAY at Shutdown's deadline, or
// after a second without one (the connection is then closed hard).
//
// A peer that vanished without closing its connection (a node that lost
// power, a path that drops everything) sends nothing at all. A connection
// that has read nothing for PingInterval (10s by default) sends a PING;
// if nothing comes PingTimeout (5s) after it, the connection closes and
// its tunnels fail with ErrPeerSilent, and the client's pool dials anew.
// Any frame counts, not only the PING's answer, which may queue behind
// data. Both sides check, so a server also frees the tunnels of a client
// that vanished. QUIC connections have their idle timeout for this.
//
// Data path, tuned for a proxy that runs on one OS thread (ztunnel with
// --worker-threads 1): TCP sockets are read and written with raw system
// calls (sockconn_linux.go), so an idle process does not wake the
// runtime's monitor thread on every request; the TLS records of one frame
// write leave in one socket write (batchconn.go); and Splice of a tunnel
// with a socket has the connection's read loop write received DATA
// straight to the socket, so a tunnel costs one goroutine, and no copy
// buffer while it is idle.
package hbone
