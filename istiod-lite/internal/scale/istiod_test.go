package scale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
)

// istiod is istiod-lite running as its own process, so that its memory
// and CPU are its own (not the test's, nor inflated by the race detector
// the test may run under).
type istiod struct {
	cmd       *exec.Cmd
	exited    chan error
	grpcAddr  string
	httpAddr  string
	logFile   string
	startedAt time.Time
}

// startIstiod builds istiod-lite and starts it against env's apiserver,
// with profiling on, and waits until it is ready. It is stopped when the
// test ends; its log is shown if the test fails.
func startIstiod(t *testing.T, env *envtest.Environment) *istiod {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "istiod-lite")
	build := exec.Command("go", "build", "-o", bin, "github.com/skiffmesh/skiff/istiod-lite")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build istiod-lite: %v\n%s", err, out)
	}
	user, err := env.AddUser(envtest.User{Name: "istiod", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &istiod{grpcAddr: freeAddr(t), httpAddr: freeAddr(t), logFile: filepath.Join(dir, "istiod.log"), exited: make(chan error, 1)}
	logOut, err := os.Create(p.logFile)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "--kubeconfig="+kcPath, "--leader-elect=false",
		"--grpc-addr="+p.grpcAddr, "--http-addr="+p.httpAddr, "--dns-names="+caclient.DefaultServerName,
		"--log-level=warn", "--profiling")
	p.cmd.Stdout, p.cmd.Stderr = logOut, logOut
	p.startedAt = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait(); logOut.Close() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			p.showLog(t)
		}
	})
	for {
		select {
		case err := <-p.exited:
			p.showLog(t)
			t.Fatalf("istiod-lite exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := http.Get("http://" + p.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
	}
}

// showLog logs the end of istiod-lite's log.
func (p *istiod) showLog(t *testing.T) {
	data, err := os.ReadFile(p.logFile)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	t.Logf("istiod-lite log (last %d of %d lines):\n%s", min(len(lines), 40), len(lines), strings.Join(lines[max(0, len(lines)-40):], "\n"))
}

// get fetches a path of istiod-lite's HTTP endpoint.
func (p *istiod) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// memory is istiod-lite's memory use.
type memory struct {
	heapInUse, rss, peakRSS int64
}

// memory collects garbage in istiod-lite (the heap profile endpoint does,
// with gc=1), then reads its heap in use from /metrics and its resident
// set from /proc.
func (p *istiod) memory(ctx context.Context, heapProfile string) (memory, error) {
	prof, err := p.get(ctx, "/debug/pprof/heap?gc=1")
	if err != nil {
		return memory{}, err
	}
	if heapProfile != "" {
		if err := os.WriteFile(heapProfile, prof, 0o644); err != nil {
			return memory{}, err
		}
	}
	metrics, err := p.get(ctx, "/metrics")
	if err != nil {
		return memory{}, err
	}
	var m memory
	sc := bufio.NewScanner(strings.NewReader(string(metrics)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return memory{}, fmt.Errorf("go_memstats_heap_inuse_bytes: %w", err)
			}
			m.heapInUse = int64(f)
		}
	}
	if m.heapInUse == 0 {
		return memory{}, fmt.Errorf("/metrics has no go_memstats_heap_inuse_bytes")
	}
	m.rss, m.peakRSS = procRSS(p.cmd.Process.Pid)
	return m, nil
}

// profileCPU saves istiod-lite's CPU profile, in slices of a few seconds,
// into dir until ctx ends; `go tool pprof` merges the files it is given.
func (p *istiod) profileCPU(ctx context.Context, dir string) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		for i := 1; ctx.Err() == nil; i++ {
			// Not bound to ctx: the endpoint writes nothing if the request
			// is cancelled, and each slice is short.
			prof, err := p.get(context.WithoutCancel(ctx), "/debug/pprof/profile?seconds=5")
			if err != nil {
				return
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("cpu-load-%02d.pprof", i)), prof, 0o644)
		}
	}()
	return d
}

// cpu returns istiod-lite's CPU time so far (user and system).
func (p *istiod) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// procCPU returns a process's user+system CPU time so far.
func procCPU(pid int) time.Duration { return benchpeer.CPUTime([]int{pid}) }

// procRSS returns a process's resident and peak resident set sizes in bytes.
func procRSS(pid int) (rss, hwm int64) {
	rss, _ = benchpeer.RSS(pid)
	hwm, _ = benchpeer.PeakRSS(pid)
	return rss, hwm
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
