package proxy

import (
	"fmt"
	"net/http"
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
