package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
)

// echoStats is outlier detection's view of the echo service's port 80.
func (m *testMesh) echoStats() outlier.Stats {
	return m.px.cfg.Balancer.Pool(balance.PoolKey{Service: testNS + "/" + hostname("echo"), Port: 80}).Stats()
}

// An endpoint that keeps answering 5xx is ejected: requests go to the
// other one until the test clock passes the ejection, and then it gets
// requests again.
func TestOutlierEjectsAndRestores(t *testing.T) {
	oc := outlier.Config{Consecutive: 2, BaseEjection: 30 * time.Second}
	m, eps := oneService(t, nil, meshOptions{outlier: oc}, "127.77.17.1:8080", "127.77.17.2:8080")
	good, bad := eps[0], eps[1]
	bad.handle(answer(http.StatusInternalServerError))
	c := m.http1Client()
	get := func() int {
		resp, _ := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
		return resp.StatusCode
	}
	// Until the bad endpoint has failed twice in a row, some requests
	// reach it.
	for i := 0; bad.hits.Load() < int64(oc.Consecutive); i++ {
		if i == 200 {
			t.Fatalf("200 requests and the bad endpoint got only %d", bad.hits.Load())
		}
		get()
	}
	if st := m.echoStats(); st.Ejected != 1 || st.Ejections != 1 {
		t.Fatalf("after %d consecutive failures: %+v, want the endpoint ejected", oc.Consecutive, st)
	}
	before := bad.hits.Load()
	for range 30 {
		if code := get(); code != 200 {
			t.Fatalf("status %d while the bad endpoint is ejected", code)
		}
	}
	if got := bad.hits.Load(); got != before {
		t.Errorf("the ejected endpoint got %d requests", got-before)
	}
	if good.hits.Load() < 30 {
		t.Errorf("the good endpoint got %d requests, want at least 30", good.hits.Load())
	}

	m.now.Add(oc.BaseEjection + time.Second)
	bad.handle(echoOK)
	for i := 0; bad.hits.Load() == before; i++ {
		if i == 200 {
			t.Fatal("200 requests after the ejection ended and none reached the restored endpoint")
		}
		if code := get(); code != 200 {
			t.Fatalf("status %d after the ejection ended", code)
		}
	}
	if st := m.echoStats(); st.Ejected != 0 {
		t.Errorf("after the ejection time: %+v, want none ejected", st)
	}
}

// When every endpoint fails, outlier detection ejects no more than half
// of them: of three, one; the others keep getting requests.
func TestOutlierNeverEjectsMoreThanHalf(t *testing.T) {
	for _, n := range []int{2, 3, 4} {
		t.Run(fmt.Sprint(n, " endpoints"), func(t *testing.T) {
			addrs := make([]string, n)
			for i := range addrs {
				addrs[i] = fmt.Sprintf("127.77.18.%d:8080", 10*n+i)
			}
			oc := outlier.Config{Consecutive: 1, BaseEjection: time.Minute}
			m, eps := oneService(t, nil, meshOptions{outlier: oc}, addrs...)
			for _, e := range eps {
				e.handle(answer(http.StatusInternalServerError))
			}
			c := m.http1Client()
			for range 20 * n {
				resp, _ := m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
				if resp.StatusCode != 500 {
					t.Fatalf("status %d, want the backends' 500", resp.StatusCode)
				}
				if st := m.echoStats(); st.Ejected > n/2 {
					t.Fatalf("%d of %d endpoints ejected: %+v", st.Ejected, n, st)
				}
			}
			st := m.echoStats()
			if st.Ejected != n/2 || st.SkippedByCap == 0 {
				t.Errorf("stats %+v, want %d ejected and ejections skipped by the cap", st, n/2)
			}
			// The endpoints not ejected keep serving.
			before := make([]int64, n)
			for i, e := range eps {
				before[i] = e.hits.Load()
			}
			for range 20 * n {
				m.do(c, mustRequest(t, "GET", "http://"+echoVIP+"/", nil))
			}
			serving := 0
			for i, e := range eps {
				if e.hits.Load() > before[i] {
					serving++
				}
			}
			if serving < n-n/2 {
				t.Errorf("%d endpoints served requests, want at least %d", serving, n-n/2)
			}
		})
	}
}

// Failures that are the client's, not the endpoint's, never eject it: a
// client that cancels its requests, or sends a malformed body.
func TestOutlierIgnoresClientFailures(t *testing.T) {
	oc := outlier.Config{Consecutive: 1, BaseEjection: time.Minute}
	t.Run("cancelled requests", func(t *testing.T) {
		m, eps := oneService(t, nil, meshOptions{outlier: oc}, "127.77.27.1:8080", "127.77.27.2:8080")
		arrived := make(chan struct{})
		for _, e := range eps {
			e.handle(func(w http.ResponseWriter, r *http.Request) {
				select {
				case arrived <- struct{}{}:
					<-r.Context().Done()
				case <-r.Context().Done():
				}
			})
		}
		c := m.http1Client()
		for range 5 {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				resp, err := c.Do(mustRequest(t, "GET", "http://"+echoVIP+"/", nil).WithContext(ctx))
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			<-arrived
			cancel()
			if err := <-done; err == nil {
				t.Fatal("a cancelled request succeeded")
			}
		}
		// The proxy logs each request once it has reported its outcome.
		if err := m.access.waitLines(t.Context(), 5); err != nil {
			t.Fatal(err)
		}
		if st := m.echoStats(); st.Ejections != 0 || st.SkippedByCap != 0 {
			t.Errorf("cancelled requests counted as the endpoints' failures: %+v", st)
		}
	})
	t.Run("malformed bodies", func(t *testing.T) {
		m, eps := oneService(t, nil, meshOptions{outlier: oc}, "127.77.27.3:8080", "127.77.27.4:8080")
		for _, e := range eps {
			e.handle(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
		}
		big := strings.Repeat("x", 100<<10)
		for range 3 {
			c, err := m.tunnel(t.Context(), echoVIP+":80")
			if err != nil {
				t.Fatal(err)
			}
			go io.WriteString(c, "POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"+
				strconv.FormatInt(int64(len(big)), 16)+"\r\n"+big+"\r\nzz\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
		}
		if st := m.echoStats(); st.Ejections != 0 || st.SkippedByCap != 0 {
			t.Errorf("malformed request bodies counted as the endpoints' failures: %+v", st)
		}
		if resp, _ := m.do(m.http1Client(), mustRequest(t, "GET", "http://"+echoVIP+"/", nil)); resp.StatusCode != 200 {
			t.Errorf("a valid request after them: %d", resp.StatusCode)
		}
	})
}
