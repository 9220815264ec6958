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
	m, main, mirrors := mirrorMesh(t, "21", []string{"never", "always"}, []uint32{0, 100})
	const requests = 20
	c := m.http1Client()
	for range requests {
		resp, _ := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// The proxy's goroutines are the tunnels being served and the mirrors
	// in flight: once the client's connections are closed and they have
	// all ended, every copy sent has been counted.
	c.CloseIdleConnections()
	m.px.wg.Wait()
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
