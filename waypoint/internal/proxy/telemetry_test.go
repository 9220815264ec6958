package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Every request makes one access log line, naming its route and rule,
// and counts in istio_requests_total with the waypoint's labels.
func TestAccessLogAndRequestMetrics(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{{
		Name:     "canary",
		Matches:  []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_PREFIX, Value: "/app"}}},
		Backends: []*waypointapi.BackendRef{backendRef("echo", 1)},
	}}}}
	m, eps := oneService(t, svc, meshOptions{}, "127.77.33.1:8080")
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/app/teapot" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		io.WriteString(w, "ok")
	})
	c := m.http1Client()
	want := map[string]int{"200": 3, "418": 1, "404": 2}
	for _, p := range []string{"/app/a", "/app/b", "/app/c", "/app/teapot", "/nope", "/nope/2"} {
		m.do(c, mustRequest(t, "GET", "http://"+echoVIP+p, nil))
	}
	if err := m.access.waitLines(t.Context(), 6); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(m.access.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d access log lines for 6 requests:\n%s", len(lines), m.access.String())
	}
	for _, line := range lines {
		if !strings.Contains(line, "msg=request") || !strings.Contains(line, "src.identity=spiffe://cluster.local/ns/default/sa/sleep") {
			t.Errorf("line lacks the request or its client: %s", line)
		}
		routed := strings.Contains(line, "path=/app/")
		named := strings.Contains(line, "route=default/r") && strings.Contains(line, "rule=0") && strings.Contains(line, "rule_name=canary")
		if routed != named {
			t.Errorf("routed %v, but the line names the route and rule: %v: %s", routed, named, line)
		}
		if routed && !strings.Contains(line, "upstream=127.77.33.1:8080") {
			t.Errorf("line lacks the endpoint: %s", line)
		}
		if !routed && !strings.Contains(line, "flags=NR") {
			t.Errorf("a request no route matched lacks the NR flag: %s", line)
		}
	}
	s := m.scrape()
	for code, n := range want {
		got, ok := metricValue(s, "istio_requests_total", `reporter="waypoint"`, `response_code="`+code+`"`,
			`destination_service="echo.default.svc.cluster.local"`, `destination_service_name="echo"`, `request_protocol="http"`,
			`source_principal="spiffe://cluster.local/ns/default/sa/sleep"`)
		if !ok || got != float64(n) {
			t.Errorf("istio_requests_total{response_code=%q} = %v, want %d:\n%s", code, got, n, grepLines(s, "istio_requests_total"))
		}
	}
	if _, ok := metricValue(s, "istio_requests_total", `destination_workload="echo-0"`, `response_code="200"`); !ok {
		t.Errorf("no series names the destination workload:\n%s", grepLines(s, "istio_requests_total"))
	}
	if _, ok := metricValue(s, "istio_request_duration_milliseconds_count", `reporter="waypoint"`); !ok {
		t.Errorf("no istio_request_duration_milliseconds series")
	}
}

// A connection passed through at L4 makes one access log line and the
// Istio TCP metrics.
func TestTCPTelemetry(t *testing.T) {
	m := tcpMesh(t, "tcp", "127.77.33.2:9000", meshOptions{})
	m.startTCPEndpoint("db-0", "127.77.33.2:9000", "db", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		io.WriteString(c, "got:"+string(b))
	})
	c, err := m.tunnel(t.Context(), "10.96.4.10:5432")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		io.WriteString(c, "0123456789")
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	if got, _ := io.ReadAll(c); string(got) != "got:0123456789" {
		t.Fatalf("got %q", got)
	}
	c.Close()
	if err := m.access.waitLines(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if log := m.access.String(); !strings.Contains(log, "msg=connection") || !strings.Contains(log, "bytes_received=10") || !strings.Contains(log, "bytes_sent=14") {
		t.Errorf("access log: %s", log)
	}
	s := m.scrape()
	for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"} {
		if got, _ := metricValue(s, name, `reporter="waypoint"`, `destination_service="db.default.svc.cluster.local"`); got != 1 {
			t.Errorf("%s = %v, want 1:\n%s", name, got, grepLines(s, "istio_tcp"))
		}
	}
	// Istio's received bytes are the client's, its sent bytes the
	// answer's.
	for name, want := range map[string]float64{"istio_tcp_received_bytes_total": 10, "istio_tcp_sent_bytes_total": 14} {
		if got, _ := metricValue(s, name, `reporter="waypoint"`); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
