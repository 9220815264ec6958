package benchpeer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			stat: "42 (nginx) S 41 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 100 1000 200",
			want: procStat{ppid: 41, utime: 250, stime: 17},
		},
		{
			name: "name with spaces and parentheses",
			stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0",
			want: procStat{ppid: 1, utime: 3, stime: 4},
		},
		{name: "no name", stat: "7 R 1", wantErr: true},
		{name: "short", stat: "7 (x) R 1 2 3", wantErr: true},
		{name: "negative time", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add("42 (nginx) S 41 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 100 1000 200")
	f.Add("7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parseStat(s)
		if err == nil && (st.utime < 0 || st.stime < 0) {
			t.Fatalf("accepted negative CPU times from %q: %+v", s, st)
		}
	})
}

func TestProcessTreeAndCPUTimeOfSelf(t *testing.T) {
	pids := ProcessTree(os.Getpid())
	if len(pids) == 0 || pids[0] != os.Getpid() {
		t.Fatalf("ProcessTree(self) = %v, want self first", pids)
	}
	if CPUTime([]int{os.Getpid()}) < 0 {
		t.Fatal("negative CPU time")
	}
	if got := CPUTime([]int{-1}); got != 0 {
		t.Fatalf("CPU time of a missing process = %v, want 0", got)
	}
}

// peerSetup is every peer configuration the waypoint benchmark writes,
// on loopback ports, with a certificate.
type peerSetup struct {
	origin     Origin
	plain, tls L7Proxy
}

func newPeerSetup(t *testing.T) peerSetup {
	t.Helper()
	dir := t.TempDir()
	cert, err := WriteServerCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	port := func() string {
		p, err := FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	sub := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	o := Origin{Dir: sub("origin"), H1Listen: port(), H2Listen: port(), TLSListen: port(), TLS: &cert,
		Files: map[string]int64{"1k": 1024}}
	return peerSetup{
		origin: o,
		plain:  L7Proxy{Dir: sub("plain"), H1Listen: port(), H2Listen: port(), H1Origin: o.H1Listen, H2Origin: o.H2Listen},
		tls:    L7Proxy{Dir: sub("tls"), H1Listen: port(), H2Listen: port(), H1Origin: o.TLSListen, H2Origin: o.TLSListen, TLS: &cert},
	}
}

// TestConfigsAccepted checks that HAProxy and nginx accept every
// configuration this package writes (their own syntax checkers).
func TestConfigsAccepted(t *testing.T) {
	s := newPeerSetup(t)
	type check struct {
		name, bin, dir, conf string
		args                 func(path string) []string
	}
	haproxy := func(p string) []string { return []string{"-c", "-q", "-f", p} }
	nginx := func(dir string) func(string) []string {
		return func(p string) []string { return []string{"-t", "-q", "-p", dir, "-c", p} }
	}
	checks := []check{
		{"haproxy plaintext", "haproxy", s.plain.Dir, haproxyConfig(s.plain), haproxy},
		{"haproxy TLS", "haproxy", s.tls.Dir, haproxyConfig(s.tls), haproxy},
		{"nginx plaintext", "nginx", s.plain.Dir, nginxProxyConfig(s.plain), nginx(s.plain.Dir)},
		{"nginx TLS", "nginx", s.tls.Dir, nginxProxyConfig(s.tls), nginx(s.tls.Dir)},
		{"nginx origin", "nginx", s.origin.Dir, originConfig(s.origin), nginx(s.origin.Dir)},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			bin, err := exec.LookPath(c.bin)
			if err != nil {
				t.Skipf("%s not installed (make bench-waypoint installs it)", c.bin)
			}
			if err := os.MkdirAll(filepath.Join(c.dir, "tmp"), 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(c.dir, "check.conf")
			if err := os.WriteFile(path, []byte(c.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, c.args(path)...).CombinedOutput(); err != nil {
				t.Fatalf("%s rejects its configuration: %v\n%s\n%s", c.bin, err, out, c.conf)
			}
		})
	}
}

// TestPeersServe runs the origin and both proxies, plaintext and TLS,
// and sends a few requests of each protocol through each with h2load.
func TestPeersServe(t *testing.T) {
	for _, bin := range []string{"haproxy", "nginx", "h2load"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make bench-waypoint installs it)", bin)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := newPeerSetup(t)
	origin, err := StartNginxOrigin(ctx, s.origin)
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	for _, fr := range []FixedRate{
		{URL: "http://" + s.origin.H1Listen + "/1k"},
		{URL: "http://" + s.origin.H2Listen + "/1k", HTTP2: true},
		{URL: "https://" + s.origin.TLSListen + "/1k"},
		{URL: "https://" + s.origin.TLSListen + "/1k", HTTP2: true},
		{URL: "http://" + s.origin.H1Listen + "/missing", HTTP2: false},
	} {
		fr.Conns, fr.Rate, fr.WarmUp, fr.Duration = 2, 200, 50*time.Millisecond, 200*time.Millisecond
		lat, err := fr.Run(ctx)
		if strings.HasSuffix(fr.URL, "/missing") {
			if err == nil || !strings.Contains(err.Error(), "404") {
				t.Errorf("FixedRate %s: err = %v, want a 404", fr.URL, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("FixedRate %s (HTTP/2 %v): %v", fr.URL, fr.HTTP2, err)
		}
		if len(lat) != 40 {
			t.Errorf("FixedRate %s (HTTP/2 %v): %d latencies, want 40 (200/s for 200ms)", fr.URL, fr.HTTP2, len(lat))
		}
	}
	start := map[string]func(context.Context, L7Proxy) (*Proc, error){"haproxy": StartHAProxy, "nginx": StartNginxProxy}
	for _, name := range []string{"haproxy", "nginx"} {
		for _, tc := range []struct {
			mode string
			cfg  L7Proxy
		}{{"plaintext", s.plain}, {"TLS", s.tls}} {
			t.Run(name+"/"+tc.mode, func(t *testing.T) {
				cfg := tc.cfg
				cfg.Dir = filepath.Join(cfg.Dir, name)
				if err := os.Mkdir(cfg.Dir, 0o700); err != nil {
					t.Fatal(err)
				}
				p, err := start[name](ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				scheme := "http"
				if cfg.TLS != nil {
					scheme = "https"
				}
				for _, h1 := range []bool{true, false} {
					addr := cfg.H2Listen
					if h1 {
						addr = cfg.H1Listen
					}
					r, err := H2Load{URL: scheme + "://" + addr + "/1k", HTTP1: h1, Clients: 2, Streams: 2, Requests: 50, Latencies: true, Dir: t.TempDir()}.Run(ctx)
					if err != nil {
						t.Fatalf("HTTP/1.1 %v: %v", h1, err)
					}
					if r.DataBytes != 50*1024 || len(r.Latencies) != 50 {
						t.Errorf("HTTP/1.1 %v: %d bytes and %d latencies, want %d and 50", h1, r.DataBytes, len(r.Latencies), 50*1024)
					}
				}
				if TotalRSS(p.PIDs()) <= 0 || CPUTime(p.PIDs()) < 0 {
					t.Error("no RSS for a running proxy")
				}
			})
		}
	}
}

const procStatSample = `cpu  1000 5 300 9000 20 1 2 3 0 0
cpu0 600 5 200 4000 10 1 1 3 0 0
cpu1 400 0 100 5000 10 0 1 0 0 0
intr 12345
`

func TestParseCPUBusy(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		cpu     int
		want    time.Duration
		wantErr bool
	}{
		{"cpu0", procStatSample, 0, 8100 * time.Millisecond, false}, // 600+5+200+1+1+3 ticks
		{"cpu1", procStatSample, 1, 5010 * time.Millisecond, false}, // 400+100+1
		{"missing cpu", procStatSample, 2, 0, true},
		{"short line", "cpu0 1 2 3\n", 0, 0, true},
		{"negative", "cpu0 -1 0 0 0 0 0 0 0\n", 0, 0, true},
		{"overflow", "cpu0 9223372036854775807 9 0 0 0 0 0 0\n", 0, 0, true},
		{"not cpu10 for cpu1", "cpu10 1 0 0 0 0 0 0 0\n", 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUBusy(tt.stat, tt.cpu)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := CPUBusy(0); err != nil {
		t.Errorf("CPUBusy(0) on this machine: %v", err)
	}
}

func FuzzParseCPUBusy(f *testing.F) {
	f.Add(procStatSample, 0)
	f.Add("cpu0 1 2 3 4 5 6 7 8\n", 0)
	f.Fuzz(func(t *testing.T, stat string, cpu int) {
		got, err := parseCPUBusy(stat, cpu)
		if err == nil && got < 0 {
			t.Fatalf("negative busy time %v", got)
		}
	})
}
