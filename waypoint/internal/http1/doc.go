// Package http1 is the waypoint's HTTP/1.1 codec: a strict server that
// turns a connection's bytes into *http.Request values for an ordinary
// http.Handler, and a client that sends one *http.Request at a time on a
// backend connection.
//
// It exists because the waypoint is a policy enforcement point. Whatever
// the waypoint accepts, it passes on re-framed; a message that two parsers
// could read two ways (request smuggling) must therefore be refused here,
// before any policy or handler sees it. net/http's server is lenient where
// a policy point cannot be (it accepts, for instance, "Transfer-Encoding:
// identity"), and its Transport rewrites what it sends (gzip, headers), so
// neither is used on the request path. The bar is nginx's behaviour:
//
//   - Framing is unambiguous or refused: one Content-Length of digits only,
//     or exactly "Transfer-Encoding: chunked", never both; HTTP/1.0 gets no
//     Transfer-Encoding at all. Chunk sizes, chunk extensions and the CRLF
//     after chunk data are checked byte for byte.
//   - Heads are tokens and visible characters: no obs-fold, no whitespace
//     before a colon, no CTLs in values, no bare CR; a bare LF ending a
//     head line is accepted (RFC 9112 2.2), as nginx does.
//   - An HTTP/1.1 request has exactly one Host, and it is a valid
//     authority; an absolute-form target overrides it (RFC 9112 3.2.2).
//   - A rejected request is answered 400 (431 for an oversized head, 414
//     for an oversized request line, 505 for another HTTP version, 417 for
//     an expectation other than 100-continue) with "Connection: close", and
//     the connection ends: the handler never sees it, nor any byte after
//     it. A malformed chunked body is found while the handler reads it: its
//     Read fails with a *ProtocolError, and the server answers 400 if the
//     handler did not answer, then closes.
//
// The *http.Request handed to the handler is shaped as net/http's server
// shapes it: Host and Transfer-Encoding move from Header to Request.Host
// and Request.TransferEncoding; the URL keeps the target's escaped form:
// URL.EscapedPath gives the path as received, but for bytes RFC 3986 does
// not allow in a path (such as "|"), which come percent-encoded.
//
// The server adds nothing to a handler's response but framing
// (Content-Length, Transfer-Encoding, Connection): no Date, no sniffed
// Content-Type. The client adds nothing but Host and framing. Both reuse
// their buffers per connection and parse a head into one string, so a
// request costs a handful of allocations whatever its body's size.
package http1
