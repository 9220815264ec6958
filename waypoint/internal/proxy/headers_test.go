package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// hopIn is a request header full of hop-by-hop fields. An h2 client
// sends none (RFC 9113 8.2.2: net/http's refuses to) but TE: trailers.
func hopIn(proto string) http.Header {
	if proto == "http2" {
		return http.Header{"Te": {"trailers"}, "X-End-To-End": {"kept"}}
	}
	return http.Header{
		"Connection":          {"X-Req-Hop, keep-alive"},
		"X-Req-Hop":           {"named by Connection"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authorization": {"Basic eDp5"},
		"Te":                  {"gzip"},
		"Upgrade":             {"foo/2"},
		"X-End-To-End":        {"kept"},
	}
}

// hopWant is what the backend gets of hopIn: of the hop-by-hop fields,
// only TE: trailers, which gRPC needs on each h2 hop.
func hopWant(proto string) http.Header {
	te := ""
	if proto == "http2" {
		te = "trailers"
	}
	return http.Header{
		"Connection": {""}, "X-Req-Hop": {""}, "Keep-Alive": {""}, "Proxy-Connection": {""},
		"Proxy-Authorization": {""}, "Te": {te}, "Upgrade": {""}, "X-End-To-End": {"kept"},
	}
}

// Hop-by-hop fields stop at the waypoint both ways, over HTTP/1.1 and
// h2; the forwarding fields name the client, after what earlier proxies
// wrote; an x-request-id is kept, or made.
func TestHopByHopAndForwardingHeaders(t *testing.T) {
	for i, proto := range []string{"http", "http2"} {
		t.Run(proto, func(t *testing.T) {
			m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, proto), meshOptions{}, "127.77.31."+strconv.Itoa(i+1)+":8080")
			seen := make(chan http.Header, 4)
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Header.Clone()
				h := w.Header()
				h.Set("Connection", "X-Resp-Hop")
				h.Set("X-Resp-Hop", "named by Connection")
				h.Set("Keep-Alive", "timeout=5")
				h.Set("Proxy-Authenticate", "Basic")
				h.Set("X-End-To-End", "kept")
				w.WriteHeader(200)
			})
			c := m.http1Client()
			if proto == "http2" {
				c = m.http2Client()
			}
			for _, tc := range []struct {
				name string
				in   http.Header
				want http.Header // "" means absent
			}{
				{"hop-by-hop", hopIn(proto), hopWant(proto)},
				{"first hop", http.Header{}, http.Header{
					"X-Forwarded-For": {"127.77.0.100"}, "Forwarded": {"for=127.77.0.100;proto=http"}, "X-Forwarded-Proto": {"http"},
				}},
				{"behind another proxy", http.Header{
					"X-Forwarded-For": {"203.0.113.7"}, "Forwarded": {`for="[2001:db8::1]";proto=https`}, "X-Forwarded-Proto": {"https"},
				}, http.Header{
					"X-Forwarded-For":   {"203.0.113.7, 127.77.0.100"},
					"Forwarded":         {`for="[2001:db8::1]";proto=https, for=127.77.0.100;proto=http`},
					"X-Forwarded-Proto": {"https"},
				}},
				{"request id kept", http.Header{"X-Request-Id": {"abc-123"}}, http.Header{"X-Request-Id": {"abc-123"}}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req := mustRequest(t, "GET", "http://"+echoVIP+"/h", nil)
					for k, v := range tc.in {
						req.Header[k] = v
					}
					resp, _ := m.do(c, req)
					if resp.StatusCode != 200 {
						t.Fatalf("status %d", resp.StatusCode)
					}
					got := <-seen
					for k, v := range tc.want {
						if v[0] == "" {
							if g, ok := got[k]; ok {
								t.Errorf("the backend got %s: %q", k, g)
							}
							continue
						}
						if g := strings.Join(got[k], ", "); g != v[0] {
							t.Errorf("the backend got %s: %q, want %q", k, g, v[0])
						}
					}
					if id := got.Get("X-Request-Id"); len(tc.in["X-Request-Id"]) == 0 && (len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "") {
						t.Errorf("made-up x-request-id %q, want 32 hex digits", id)
					}
					respHop := []string{"Keep-Alive", "Proxy-Authenticate"}
					if proto == "http" {
						// An h2 backend cannot send Connection (net/http's
						// drops it), so only over HTTP/1.1 does it name a
						// field.
						respHop = append(respHop, "X-Resp-Hop")
					}
					for _, k := range respHop {
						if v, ok := resp.Header[k]; ok {
							t.Errorf("the client got %s: %q", k, v)
						}
					}
					if resp.Header.Get("X-End-To-End") != "kept" {
						t.Errorf("the client lost an end-to-end field: %v", resp.Header)
					}
				})
			}
		})
	}
}

// Too many header fields over h2 get 431, whether the fields have many
// names or one name repeated; the limit is the one HTTP/1.1 has.
func TestTooManyHeaderFieldsOverH2(t *testing.T) {
	m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, "http2"), meshOptions{}, "127.77.31.10:8080")
	for _, tc := range []struct {
		name   string
		header func(http.Header)
		status int
	}{
		{"many names", func(h http.Header) {
			for i := range 150 {
				h.Set("X-Field-"+strconv.Itoa(i), "v")
			}
		}, 431},
		{"one name repeated", func(h http.Header) {
			for range 150 {
				h.Add("X-Field", "v")
			}
		}, 431},
		{"within the limit", func(h http.Header) {
			for i := range 50 {
				h.Set("X-Field-"+strconv.Itoa(i), "v")
			}
		}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := eps[0].hits.Load()
			req := mustRequest(t, "GET", "http://"+echoVIP+"/", nil)
			tc.header(req.Header)
			resp, _ := m.do(m.http2Client(), req)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := eps[0].hits.Load() - before; tc.status != 200 && got != 0 {
				t.Errorf("the backend saw %d requests", got)
			}
		})
	}
}

// CONNECT is not proxied by the waypoint (the mesh's tunnels are HBONE's
// own): 405, over HTTP/1.1 and h2.
func TestConnectRefused(t *testing.T) {
	m, eps := oneService(t, nil, meshOptions{}, "127.77.31.11:8080")
	resp, body := m.rawRequest(nil, echoVIP+":80", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("HTTP/1.1 CONNECT: %d %q, want 405", resp.StatusCode, body)
	}
	req := mustRequest(t, "CONNECT", "http://"+echoVIP+":80", nil)
	req.Host = "example.com:443"
	resp, body = m.do(m.http2Client(), req)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("h2 CONNECT: %d %q, want 405", resp.StatusCode, body)
	}
	if got := eps[0].hits.Load(); got != 0 {
		t.Errorf("the backend saw %d requests", got)
	}
}

// Expect: 100-continue: the client hears 100 Continue from the waypoint
// once the request is on its way to a backend, then sends the body,
// which arrives whole; a request refused before that gets its final
// answer and no 100, and the body is never asked for.
func TestExpectContinue(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
		Matches:  []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_PREFIX, Value: "/upload"}}},
		Backends: []*waypointapi.BackendRef{backendRef("echo", 1)},
	}}}}
	m, eps := oneService(t, svc, meshOptions{}, "127.77.31.12:8080")
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, "got "+string(b))
	})
	for _, tc := range []struct {
		path        string
		continue100 bool
		status      int
		body        string
	}{
		{"/upload", true, 200, "got hello"},
		{"/elsewhere", false, 404, ""}, // no route: refused before the body is needed
	} {
		t.Run(tc.path, func(t *testing.T) {
			c, err := m.tunnel(t.Context(), echoVIP+":80")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "POST "+tc.path+" HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.continue100 {
				if resp.StatusCode != http.StatusContinue {
					t.Fatalf("first answer %d, want 100 Continue", resp.StatusCode)
				}
				io.WriteString(c, "hello")
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
				t.Errorf("answer %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
}

// Framing of answers without a body: HEAD keeps the Content-Length of
// what GET would send, 204 and 304 have none, over HTTP/1.1 and h2.
func TestBodilessAnswers(t *testing.T) {
	for i, proto := range []string{"http", "http2"} {
		t.Run(proto, func(t *testing.T) {
			m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, proto), meshOptions{}, "127.77.31."+strconv.Itoa(20+i)+":8080")
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/204":
					w.WriteHeader(http.StatusNoContent)
				case "/304":
					w.WriteHeader(http.StatusNotModified)
				default:
					w.Header().Set("Content-Length", "11")
					io.WriteString(w, "hello world")
				}
			})
			c := m.http1Client()
			if proto == "http2" {
				c = m.http2Client()
			}
			for _, tc := range []struct {
				method, path string
				status       int
				length       int64
			}{
				{"HEAD", "/", 200, 11},
				{"GET", "/", 200, 11},
				{"GET", "/204", 204, 0},
				{"GET", "/304", 304, 0},
			} {
				resp, body := m.do(c, mustRequest(t, tc.method, "http://"+echoVIP+tc.path, nil))
				if resp.StatusCode != tc.status || resp.ContentLength != tc.length && !(tc.length == 0 && resp.ContentLength <= 0) {
					t.Errorf("%s %s: %d, length %d, want %d, %d", tc.method, tc.path, resp.StatusCode, resp.ContentLength, tc.status, tc.length)
				}
				if want := map[bool]string{true: "hello world", false: ""}[tc.method == "GET" && tc.status == 200]; body != want {
					t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, body, want)
				}
			}
		})
	}
}
