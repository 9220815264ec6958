package benchpeer

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// h2loadOutput is the closing report of nghttp2 1.52's h2load.
const h2loadOutput = `starting benchmark...
spawning thread #0: 4 total client(s). 2000 total requests
progress: 100% done

finished in 243.78ms, 8204.02 req/s, 9.89MB/s
requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.41MB (2528000) total, 369.14KB (378000) headers (space savings 0.00%), 1.95MB (2048000) data
                     min         max         mean         sd        +/- sd
time for request:       11us    153.65ms       391us      6.90ms    99.60%
`

func TestParseH2LoadSummary(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    H2LoadSummary
		wantErr string
	}{
		{
			name: "h1 run",
			out:  h2loadOutput,
			want: H2LoadSummary{
				Elapsed: 243780 * time.Microsecond, RequestsPerSec: 8204.02,
				Total: 2000, Started: 2000, Done: 2000, Succeeded: 2000, Status2xx: 2000, DataBytes: 2048000,
			},
		},
		{
			name: "seconds and errors",
			out: "finished in 3.00s, 200.00 req/s, 224.61KB/s\n" +
				"requests: 400 total, 404 started, 400 done, 390 succeeded, 10 failed, 10 errored, 0 timeout\n" +
				"status codes: 390 2xx, 0 3xx, 0 4xx, 0 5xx\n" +
				"traffic: 449.22KB (460000) total, 63.28KB (64800) headers (space savings 39.66%), 600.00KB (614400) data\n",
			want: H2LoadSummary{
				Elapsed: 3 * time.Second, RequestsPerSec: 200,
				Total: 400, Started: 404, Done: 400, Succeeded: 390, Failed: 10, Errored: 10, Status2xx: 390, DataBytes: 614400,
			},
		},
		{name: "empty", out: "", wantErr: "finished in"},
		{name: "no status line", out: strings.Replace(h2loadOutput, "status codes", "codes", 1), wantErr: "status codes"},
		{name: "no traffic line", out: strings.Replace(h2loadOutput, "traffic", "bytes", 1), wantErr: "traffic"},
		{
			name: "answers to warm-up requests",
			out:  strings.Replace(h2loadOutput, "2000 2xx", "2002 2xx", 1),
			want: H2LoadSummary{
				Elapsed: 243780 * time.Microsecond, RequestsPerSec: 8204.02,
				Total: 2000, Started: 2000, Done: 2000, Succeeded: 2000, Status2xx: 2002, DataBytes: 2048000,
			},
		},
		{
			name:    "more succeeded than done",
			out:     strings.Replace(h2loadOutput, "2000 succeeded", "2001 succeeded", 1),
			wantErr: "succeeded",
		},
		{
			name:    "count overflows",
			out:     strings.Replace(h2loadOutput, "requests: 2000 total", "requests: 99999999999999999999 total", 1),
			wantErr: "requests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseH2LoadSummary([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// formatSummary writes s the way h2load does.
func formatSummary(s H2LoadSummary) string {
	return fmt.Sprintf("finished in %.2fms, %.2f req/s, 1.00MB/s\n"+
		"requests: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout\n"+
		"status codes: %d 2xx, %d 3xx, %d 4xx, %d 5xx\n"+
		"traffic: 1MB (1) total, 1KB (1) headers (space savings 0.00%%), 1MB (%d) data\n",
		float64(s.Elapsed)/float64(time.Millisecond), s.RequestsPerSec,
		s.Total, s.Started, s.Done, s.Succeeded, s.Failed, s.Errored, s.Timeout,
		s.Status2xx, s.Status3xx, s.Status4xx, s.Status5xx, s.DataBytes)
}

func FuzzParseH2LoadSummary(f *testing.F) {
	f.Add([]byte(h2loadOutput), int64(10), int64(8), int64(2), int64(1))
	f.Add([]byte("finished in 1s, 1 req/s\nrequests: 1 total, 1 started, 1 done, 1 succeeded, 0 failed, 0 errored, 0 timeout\n"), int64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, out []byte, done, ok, failed, bad int64) {
		// Whatever parses is consistent.
		if s, err := ParseH2LoadSummary(out); err == nil {
			if s.Succeeded > s.Done || s.Failed > s.Done {
				t.Fatalf("accepted %+v: more succeeded or failed than done", s)
			}
			for _, n := range []int64{s.Total, s.Started, s.Done, s.Succeeded, s.Failed, s.Errored, s.Timeout,
				s.Status2xx, s.Status3xx, s.Status4xx, s.Status5xx, s.DataBytes} {
				if n < 0 {
					t.Fatalf("accepted %+v: a negative count", s)
				}
			}
			if s.Elapsed < 0 || s.Elapsed > 24*time.Hour {
				t.Fatalf("accepted elapsed %v", s.Elapsed)
			}
		}
		// A report written the way h2load writes it reads back the same,
		// or is refused only for being inconsistent.
		if done < 0 || ok < 0 || failed < 0 || bad < 0 {
			return
		}
		s := H2LoadSummary{Elapsed: 1500 * time.Microsecond, RequestsPerSec: 12.5, Total: done, Started: done, Done: done,
			Succeeded: ok, Failed: failed, Status2xx: ok, Status5xx: bad, DataBytes: ok * 1024}
		got, err := ParseH2LoadSummary([]byte(formatSummary(s)))
		consistent := ok <= done && failed <= done
		switch {
		case consistent && err != nil:
			t.Fatalf("refused a consistent report %+v: %v", s, err)
		case !consistent && err == nil:
			t.Fatalf("accepted an inconsistent report %+v", s)
		case err == nil && got != s:
			t.Fatalf("read back %+v, wrote %+v", got, s)
		}
	})
}

func TestParseH2LoadLog(t *testing.T) {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	tests := []struct {
		name    string
		log     string
		want    []H2LoadRecord
		wantErr string
	}{
		{"empty", "", nil, ""},
		{"two", "1796512330955913\t200\t183\n1796512330956076\t204\t124\n",
			[]H2LoadRecord{{1796512330955913, 200, us(183)}, {1796512330956076, 204, us(124)}}, ""},
		{"blank lines and CRLF", "\n1\t200\t5\r\n\n", []H2LoadRecord{{1, 200, us(5)}}, ""},
		{"no status recorded", "1\t0\t9671\n", []H2LoadRecord{{1, 0, us(9671)}}, ""},
		{"error status", "1\t503\t5\n", []H2LoadRecord{{1, 503, us(5)}}, ""},
		{"negative status", "1\t-1\t5\n", nil, "status"},
		{"two fields", "1\t200\n", nil, "fields"},
		{"negative latency", "1\t200\t-5\n", nil, "latency"},
		{"huge latency", "1\t200\t99999999999\n", nil, "latency"},
		{"bad start", "x\t200\t5\n", nil, "start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseH2LoadLog(strings.NewReader(tt.log))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLatencies(t *testing.T) {
	ok := H2LoadRecord{Status: 200, Latency: time.Millisecond}
	none := H2LoadRecord{Status: 0, Latency: 9 * time.Millisecond}
	tests := []struct {
		name    string
		recs    []H2LoadRecord
		conns   int
		want    int
		wantErr bool
	}{
		{"all answered", []H2LoadRecord{ok, ok}, 1, 2, false},
		{"one unanswered per connection", []H2LoadRecord{none, ok, none, ok}, 2, 2, false},
		{"more unanswered than connections", []H2LoadRecord{none, none, ok}, 1, 0, true},
		{"an error answer", []H2LoadRecord{ok, {Status: 502}}, 1, 0, true},
		{"a redirect", []H2LoadRecord{{Status: 301}}, 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := latencies(tt.recs, tt.conns)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && len(got) != tt.want {
				t.Errorf("%d latencies, want %d", len(got), tt.want)
			}
		})
	}
}

func FuzzParseH2LoadLog(f *testing.F) {
	f.Add([]byte("1796512330955913\t200\t183\n1796512330956076\t200\t124\n"))
	f.Add([]byte("1\t500\t1\n1\t0\t1\r\n"))
	f.Fuzz(func(t *testing.T, log []byte) {
		got, err := ParseH2LoadLog(strings.NewReader(string(log)))
		if err != nil {
			return
		}
		// One record per non-empty line, each within bounds.
		lines := 0
		for _, l := range strings.Split(string(log), "\n") {
			if strings.TrimSuffix(l, "\r") != "" { // as bufio.ScanLines reads it
				lines++
			}
		}
		if len(got) != lines {
			t.Fatalf("%d records from %d lines", len(got), lines)
		}
		for _, r := range got {
			if r.Latency < 0 || r.Latency > time.Hour || r.Start < 0 || r.Status < 0 || r.Status > 999 {
				t.Fatalf("record out of bounds: %+v", r)
			}
		}
		// Whatever latencies keeps are the 2xx answers'.
		lat, err := latencies(got, 1)
		if err == nil {
			n := 0
			for _, r := range got {
				if r.Status >= 200 && r.Status <= 299 {
					n++
				}
			}
			if len(lat) != n {
				t.Fatalf("kept %d latencies of %d 2xx answers", len(lat), n)
			}
		}
	})
}
