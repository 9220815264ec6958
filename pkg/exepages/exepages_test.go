package exepages

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

// data lives in the binary's writable data segment, which Release must
// leave alone.
var data = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}

func TestRelease(t *testing.T) {
	data[0] = 42
	res, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary touched far more of itself than it touches between
	// the madvise and the measurement after it.
	if res.After >= res.Before {
		t.Errorf("file-backed resident %d bytes before, %d after: nothing released", res.Before, res.After)
	}
	if data != [8]byte{42, 2, 3, 4, 5, 6, 7, 8} {
		t.Errorf("writable data changed by Release: %v", data)
	}
	// Code released runs again: a second release goes through the same
	// functions, faulting them back in.
	if _, err := Release(); err != nil {
		t.Fatal(err)
	}
}

func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, time.Millisecond, slog.New(slog.DiscardHandler))
		close(done)
	}()
	cancel()
	<-done
}

// TestRunReturnsFreeHeap: the Go heap's free pages go back to the kernel
// on Run's tick. Left to itself the runtime keeps a few MiB of them for
// minutes (its scavenger keeps about a tenth above the next goal).
func TestRunReturnsFreeHeap(t *testing.T) {
	for range 64 {
		sink = make([]byte, 1<<20)
	}
	sink = nil
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler))
		close(done)
	}()
	defer func() { cancel(); <-done }()
	// A bounded wait on the figure, polled: the tick is Run's own. A
	// collection leaves alone the page cache of each P that is running
	// (64 pages, 512 KiB), so some free pages always stay: the bar has
	// room for them, far below the 64 MiB the runtime would keep.
	want := uint64(runtime.GOMAXPROCS(0)+2) << 19
	var free uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if free = heapFree(); free < want {
			return
		}
	}
	t.Errorf("free heap not returned: %d bytes after 10s, want under %d", free, want)
}

var sink []byte

// heapFree is the heap memory that is free and not yet returned to the
// kernel.
func heapFree() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestReleasePIE: in a position-independent binary, the loader writes
// relocations into a mapping it then makes read-only; releasing that
// mapping would throw them away and crash the process.
func TestReleasePIE(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "pie")
	build := exec.Command("go", "build", "-buildmode=pie", "-o", bin, "./testdata/pie")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "; relocated") {
		t.Errorf("output %q", out)
	}
}
