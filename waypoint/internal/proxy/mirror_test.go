package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// mirrorMesh is the echo service (one endpoint) whose one rule mirrors
// to the services named in fractions (numerator of 100 each), each with
// one endpoint; addresses are 127.77.<net>.x.
func mirrorMesh(t *testing.T, net string, mirrors []string, percents []uint32) (*testMesh, *testEndpoint, []*testEndpoint) {
	t.Helper()
	st := meshstate.Config{Services: []*meshstate.Service{service("echo", echoVIP, 80, 8080)}, Workloads: []*meshstate.Workload{
		workload("echo-0", "127.77."+net+".1:8080", "echo", hostname("echo"), 80),
	}}
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	rule := &waypointapi.HTTPRouteRule{Name: "mirrored", Backends: []*waypointapi.BackendRef{backendRef("echo", 1)}}
	for i, name := range mirrors {
		addr := "127.77." + net + "." + string(rune('2'+i)) + ":8080"
		st.Services = append(st.Services, service(name, "10.96.2."+string(rune('2'+i)), 80, 8080))
		st.Workloads = append(st.Workloads, workload(name, addr, "echo", hostname(name), 80))
		rule.Filters = append(rule.Filters, &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestMirror{RequestMirror: &waypointapi.Mirror{
			Backend: backendRef(name, 1), Numerator: percents[i], Denominator: 100,
		}}})
	}
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "mirror", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{rule}}}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}}, st, meshOptions{})
	main := m.startEndpoint("echo-0", "127.77."+net+".1:8080", "echo", echoOK)
	var out []*testEndpoint
	for i, name := range mirrors {
		out = append(out, m.startEndpoint(name, "127.77."+net+"."+string(rune('2'+i))+":8080", "echo", echoOK))
	}
	return m, main, out
}

// mirrored is what a mirror backend received.
type mirrored struct {
	method, path, host string
	body               string
}

// The mirror backend receives a copy of the request, with its body.
func TestMirrorGetsACopy(t *testing.T) {
	m, main, mirrors := mirrorMesh(t, "19", []string{"shadow"}, []uint32{100})
	got := make(chan mirrored, 4)
	mirrors[0].handle(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- mirrored{r.Method, r.URL.RequestURI(), r.Host, string(b)}
		w.WriteHeader(500) // ignored
	})
	main.handle(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "main got "+string(b))
	})
	for _, tc := range []struct {
		method, path, body string
	}{
		{"GET", "/get?x=1", ""},
		{"POST", "/post", strings.Repeat("small body ", 100)},
	} {
		t.Run(tc.method, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			resp, b := m.do(m.http1Client(), mustRequest(t, tc.method, "http://"+echoVIP+tc.path, body))
			if resp.StatusCode != 200 || b != "main got "+tc.body {
				t.Fatalf("main answer %d %q", resp.StatusCode, b)
			}
			mr := <-got
			want := mirrored{tc.method, tc.path, echoVIP, tc.body}
			if mr.method != want.method || mr.path != want.path || mr.body != want.body || !strings.HasPrefix(mr.host, echoVIP) {
				t.Errorf("mirror got %+v, want %+v", mr, want)
			}
		})
	}
}

// A mirror that does not answer does not hold the request up: the main
// answer arrives while the mirror is still blocked.
func TestSlowMirrorDoesNotDelay(t *testing.T) {
	m, main, mirrors := mirrorMesh(t, "20", []string{"shadow"}, []uint32{100})
	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	finished := make(chan struct{}, 8)
	t.Cleanup(func() { close(release) }) // before the servers close
	mirrors[0].handle(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		finished <- struct{}{}
	})
	main.handle(echoOK)
	for range 3 {
		resp, _ := m.do(m.http1Client(), mustRequest(t, "POST", "http://"+echoVIP+"/", bytes.NewReader([]byte("payload"))))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for range 3 {
		<-arrived
	}
	select {
	case <-finished:
		t.Fatal("a mirror finished before the test released it")
	default:
	}
}

// A 0% mirror never gets a copy, a 100% mirror always does.
func TestMirrorFractions(t *testing.T) {
	// The 0% mirror comes first: had it been sent a copy, it would have
	// been sent before the 100% one of the same request.
	m, main, mirrors := mirrorMesh(t, "21", []string{"never", "always"}, []uint32{0, 100})
	copies := make(chan struct{}, 64)
	mirrors[1].handle(func(w http.ResponseWriter, r *http.Request) { copies <- struct{}{} })
	const requests = 20
	c := m.http1Client()
	for range requests {
		resp, _ := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for range requests {
		<-copies
	}
	m.px.Close() // waits for any mirror still in flight
	if got := main.hits.Load(); got != requests {
		t.Errorf("main backend hits %d, want %d", got, requests)
	}
	if got := mirrors[0].hits.Load(); got != 0 {
		t.Errorf("the 0%% mirror got %d copies", got)
	}
	if got := mirrors[1].hits.Load(); got != requests {
		t.Errorf("the 100%% mirror got %d copies, want %d", got, requests)
	}
}

// sample draws the fraction of requests mirrored.
func TestSample(t *testing.T) {
	for _, tc := range []struct {
		num, den uint32
		want     float64 // share of draws; -1 for "some, not all"
	}{
		{0, 100, 0},
		{0, 0, 0},
		{100, 100, 1},
		{100, 0, 1}, // a denominator of 0 means a percentage
		{150, 100, 1},
		{1, 1, 1},
		{7, 7, 1},
		{0, 1_000_000, 0},
		{50, 0, -1},
		{1, 3, -1},
	} {
		const draws = 2000
		n := 0
		for range draws {
			if sample(tc.num, tc.den) {
				n++
			}
		}
		switch {
		case tc.want == 0 && n != 0, tc.want == 1 && n != draws:
			t.Errorf("sample(%d, %d): %d of %d, want %v of them", tc.num, tc.den, n, draws, tc.want)
		case tc.want < 0 && (n == 0 || n == draws):
			// Fail only for "none" or "all": both have probability far
			// below 1e-100 for these fractions.
			t.Errorf("sample(%d, %d): %d of %d", tc.num, tc.den, n, draws)
		}
	}
}
