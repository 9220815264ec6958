package proxy

import (
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are the hop-by-hop fields of RFC 9110 7.6.1 and their
// historical companions: they describe one connection and are never
// forwarded.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	// Expect is answered here (100-continue is sent when the body is
	// read), not passed on.
	"Expect",
	// HTTP2-Settings belongs to an h2c upgrade, which is never tunnelled.
	"Http2-Settings",
}

// removeHopHeaders deletes the hop-by-hop fields of h and the fields that
// its Connection header names. It reports whether the request asked for
// "TE: trailers" (which gRPC needs end to end, and which is re-added for
// the next hop).
func removeHopHeaders(h http.Header) (teTrailers bool) {
	for _, v := range h["Te"] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "trailers") {
				teTrailers = true
			}
		}
	}
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
	return teTrailers
}

// websocketUpgrade reports whether r asks to upgrade to WebSocket (RFC
// 6455 4.1): the only upgrade the waypoint carries. h2c upgrades in
// particular are dropped: tunnelling one would hand the client a raw
// HTTP/2 connection to the backend, past every L7 policy.
func websocketUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// addForwarded appends the client of t to X-Forwarded-For and Forwarded
// (RFC 7239) and sets X-Forwarded-Proto when the client did not. The
// protocol inside the mesh's tunnel is plain HTTP; an ingress in front may
// have set https, which is kept. A first hop's fields are the tunnel's
// own, shared by its requests.
func addForwarded(h http.Header, t *tunnel) {
	if t.xff == nil {
		return
	}
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + t.xff[0]}
	} else {
		h["X-Forwarded-For"] = t.xff
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	if prior := h["Forwarded"]; len(prior) > 0 {
		h["Forwarded"] = []string{strings.Join(prior, ", ") + ", " + t.forwarded[0]}
	} else {
		h["Forwarded"] = t.forwarded
	}
}

// Field values every request may share; nothing writes into them.
var (
	protoHTTP   = []string{"http"}
	teTrailers  = []string{"trailers"}
	connUpgrade = []string{"Upgrade"}
	upgradeWS   = []string{"websocket"}
)

// forwardedElement is the Forwarded element (RFC 7239 4) naming client.
func forwardedElement(client netip.Addr) string {
	node := client.String()
	if client.Is6() {
		node = `"[` + node + `]"`
	}
	return "for=" + node + ";proto=http"
}
