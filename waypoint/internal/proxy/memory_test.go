package proxy

import (
	"context"
	"hash/crc32"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"
)

// patternReader yields n bytes of a repeating pattern without holding
// them.
type patternReader struct {
	n, off int64
}

var pattern = func() []byte {
	b := make([]byte, 64<<10+13) // not a power of two: chunk edges move
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	n := 0
	for n < len(p) {
		i := (r.off + int64(n)) % int64(len(pattern))
		n += copy(p[n:], pattern[i:])
	}
	r.off += int64(n)
	return n, nil
}

// patternCRC is the CRC-32 of n bytes of the pattern.
func patternCRC(n int64) uint32 {
	h := crc32.NewIEEE()
	io.CopyBuffer(h, &patternReader{n: n}, make([]byte, 256<<10))
	return h.Sum32()
}

// heapSampler records the largest heap (bytes in live and not yet swept
// objects) seen while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapAllocs is the total of bytes ever allocated on the heap.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var peak uint64
		for {
			peak = max(peak, heapObjects())
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) peak() uint64 {
	close(h.stop)
	return <-h.done
}

// A 1 GiB body goes up and down through the waypoint (client, waypoint,
// destination ztunnel and backend all in this process) while the heap
// stays within a few MiB of where it started: every hop streams.
func TestOneGiBBodyMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 4 GiB")
	}
	if raceEnabled {
		t.Skip("the race detector makes moving 4 GiB take minutes")
	}
	const size = 1 << 30
	wantCRC := patternCRC(size)
	for _, tc := range []struct {
		name, appProtocol string
		upload            bool
	}{
		{"HTTP/1.1 download", "http", false},
		{"HTTP/1.1 upload", "http", true},
		{"h2 download", "http2", false},
		{"h2 upload", "http2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, eps := oneService(t, wpService("echo", echoVIP, 80, 8080, tc.appProtocol), meshOptions{}, "127.77.29.1:8080")
			eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "PUT" {
					h := crc32.NewIEEE()
					n, err := io.CopyBuffer(h, r.Body, make([]byte, 32<<10))
					if err != nil {
						http.Error(w, err.Error(), 500)
						return
					}
					io.WriteString(w, strconv.FormatInt(n, 10)+" "+strconv.FormatUint(uint64(h.Sum32()), 10))
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(size))
				io.CopyBuffer(w, &patternReader{n: size}, make([]byte, 32<<10))
			})
			c := m.http1Client()
			if tc.appProtocol == "http2" {
				c = m.http2Client()
			}
			c.Timeout = 0
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			// A warm-up request sets up the connections and pools.
			resp, _ := m.do(c, mustRequest(t, "PUT", "http://"+echoVIP+"/warm", &patternReader{n: 1 << 20}))
			if resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d", resp.StatusCode)
			}
			runtime.GC()
			// A tighter GC keeps garbage from passing for growth.
			defer debug.SetGCPercent(debug.SetGCPercent(25))
			runtime.GC()
			base := heapObjects()
			allocs0 := heapAllocs()
			sampler := startHeapSampler()
			start := time.Now()

			var got string
			if tc.upload {
				req := mustRequest(t, "PUT", "http://"+echoVIP+"/up", &patternReader{n: size}).WithContext(ctx)
				req.ContentLength = size
				resp, body := m.do(c, req)
				if resp.StatusCode != 200 {
					t.Fatalf("upload: %d %q", resp.StatusCode, body)
				}
				got = body
			} else {
				resp, err := c.Do(mustRequest(t, "GET", "http://"+echoVIP+"/down", nil).WithContext(ctx))
				if err != nil {
					t.Fatal(err)
				}
				h := crc32.NewIEEE()
				n, err := io.CopyBuffer(h, resp.Body, make([]byte, 32<<10))
				resp.Body.Close()
				if err != nil {
					t.Fatalf("download after %d bytes: %v", n, err)
				}
				got = strconv.FormatInt(n, 10) + " " + strconv.FormatUint(uint64(h.Sum32()), 10)
			}
			peak := sampler.peak()
			elapsed := time.Since(start)
			allocated := heapAllocs() - allocs0
			if want := strconv.Itoa(size) + " " + strconv.FormatUint(uint64(wantCRC), 10); got != want {
				t.Fatalf("received (bytes, CRC) %s, want %s", got, want)
			}
			growth := int64(peak) - int64(base)
			t.Logf("1 GiB in %v; heap %.1f MiB at start, peak %.1f MiB (+%.1f MiB); %.1f MiB allocated",
				elapsed.Round(time.Millisecond), float64(base)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20), float64(allocated)/(1<<20))
			// What the process may hold at once is flow-control windows,
			// whatever the body's size: the waypoint's HBONE stream window
			// on the hop the body arrives by (pkg/hbone's 4 MiB default),
			// its HTTP/2 windows (1 MiB each way), the test's own (256 KiB
			// each), the buffers of each copy loop, and the garbage the
			// collector has not yet swept.
			const bound = 12 << 20
			if growth > bound {
				t.Errorf("the heap grew by %.1f MiB moving 1 GiB, more than %d MiB", float64(growth)/(1<<20), bound>>20)
			}
			// Allocation too is per frame or per read, never per byte.
			if allocated > size/8 {
				t.Errorf("%.1f MiB allocated moving 1 GiB: more than one byte in eight", float64(allocated)/(1<<20))
			}
		})
	}
}
