package zds

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPath returns a short socket path (unix paths are limited to 108
// bytes, too few for t.TempDir under long test names).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "zds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir + "/zds.sock"
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

// startServer runs a Server until the test ends.
func startServer(t *testing.T, path string) *Server {
	t.Helper()
	s, err := NewServer(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s)
	return s
}

// serve runs s.Serve until the test ends.
func serve(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.Close()
	})
}

// startClient runs Run with h until the test ends (or stop is called).
func startClient(t *testing.T, path string, h Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, path, h, testLogger(t)) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// event is one Handler call.
type event struct {
	op    string // add, keep, del, snapshot
	w     Workload
	uid   string
	inode uint64
}

// recorder is a Handler that records calls and refuses UIDs in refuse.
type recorder struct {
	events chan event
	refuse map[string]string
}

func newRecorder() *recorder {
	return &recorder{events: make(chan event, 100), refuse: map[string]string{}}
}

func (r *recorder) AddWorkload(ctx context.Context, w Workload, netns *os.File) error {
	defer netns.Close()
	if msg, ok := r.refuse[w.UID]; ok {
		return errors.New(msg)
	}
	r.events <- event{op: "add", w: w, uid: w.UID, inode: inode(nil, netns)}
	return nil
}

func (r *recorder) KeepWorkload(ctx context.Context, uid string) error {
	r.events <- event{op: "keep", uid: uid}
	return nil
}

func (r *recorder) DelWorkload(ctx context.Context, uid string) error {
	r.events <- event{op: "del", uid: uid}
	return nil
}

func (r *recorder) SnapshotSent(ctx context.Context) error {
	r.events <- event{op: "snapshot"}
	return nil
}

// next returns the next event, failing the test if none comes within 20s.
func (r *recorder) next(t *testing.T) event {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	select {
	case e := <-r.events:
		return e
	case <-timeout.C:
		t.Fatal("no handler event within 20s")
	}
	return event{}
}

// expect takes len(want) events and fails unless they are want, each
// written "op uid" ("snapshot " for SnapshotSent); who names the ztunnel.
func (r *recorder) expect(t *testing.T, who string, want ...string) {
	t.Helper()
	for i, w := range want {
		if e := r.next(t); e.op+" "+e.uid != w {
			t.Fatalf("%s: event %d is %+v, want %q", who, i+1, e, w)
		}
	}
}

func inode(t *testing.T, f *os.File) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		if t != nil {
			t.Fatal(err)
		}
		return 0
	}
	return st.Ino
}

// newNetns returns a network namespace: a fresh one when running as root,
// else the test process's own (still a real netns descriptor).
func newNetns(t *testing.T) *os.File {
	t.Helper()
	if os.Geteuid() != 0 {
		f, err := os.Open("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is left locked: it ends with the goroutine, taking the
		// changed namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.f.Close() })
	return r.f
}

func unixRights(fds ...int) []byte { return unix.UnixRights(fds...) }
