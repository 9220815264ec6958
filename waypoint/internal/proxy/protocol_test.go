package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
)

// Clients choose their HTTP version whatever the port declares, as with
// Istio's automatic codec; the backend gets the port's: HTTP/1.1 for
// http, h2 for http2 and grpc, and the client's own when the port
// declares nothing.
func TestClientProtocolOnEveryPort(t *testing.T) {
	i := 0
	for _, tc := range []struct {
		appProtocol string
		client      int
		upstream    int
	}{
		{"http", 1, 1},
		{"http", 2, 1},
		{"http2", 1, 2},
		{"http2", 2, 2},
		{"grpc", 1, 2},
		{"grpc", 2, 2},
		{"", 1, 1},
		{"", 2, 2},
	} {
		i++
		t.Run(fmt.Sprintf("appProtocol=%q client=h%d", tc.appProtocol, tc.client), func(t *testing.T) {
			svc := wpService("echo", echoVIP, 80, 8080, tc.appProtocol)
			svc.Ports[0].Name = "web" // says nothing
			m, eps := oneService(t, svc, meshOptions{}, "127.77.32."+strconv.Itoa(i)+":8080")
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%d", r.ProtoMajor)
			})
			c := m.http1Client()
			if tc.client == 2 {
				c = m.http2Client()
			}
			for range 2 { // the second on a kept connection for h2
				resp, body := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
				if resp.StatusCode != 200 || resp.ProtoMajor != tc.client {
					t.Fatalf("answer %s %d %q", resp.Proto, resp.StatusCode, body)
				}
				if body != strconv.Itoa(tc.upstream) {
					t.Errorf("the backend got HTTP/%s, want %d", body, tc.upstream)
				}
			}
		})
	}
}
