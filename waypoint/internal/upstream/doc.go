// Package upstream carries the waypoint's requests to endpoints. Each
// endpoint is reached through a tunnel: HBONE (pkg/hbone, which pools the
// mutual-TLS connections) to an endpoint in the mesh, presenting the
// waypoint's own identity and accepting only the endpoint's, or plain TCP
// to one outside it. Inside tunnels this package keeps a second pool: the
// HTTP connections, per endpoint. HTTP/1.1 connections each take one
// tunnel and carry one request at a time; an HTTP/2 connection takes one
// tunnel and multiplexes many requests.
//
// Errors say whether the endpoint can have seen the request, which is what
// decides whether a retry is safe: a *ConnectError (no tunnel, nothing
// sent) and ErrRefused (the endpoint refused the stream, or a reused
// connection died before answering an idempotent request) never reached
// the application.
package upstream
