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
//
// The HTTP/2 side uses golang.org/x/net/http2's Framer and hpack but its own
// connection engine (h2conn.go): the x/net server resets the request side of
// a stream when a handler ends its response, so it cannot half-close a
// tunnel from the server side, which a byte-exact TCP proxy needs.
package hbone
