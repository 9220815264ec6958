// Package leaktest checks, in tests, that a process's goroutines and open
// file descriptors come back to what they were: after many cycles of
// work, a count above its baseline is a leak.
package leaktest

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Counts are a process's goroutines and open file descriptors.
type Counts struct {
	Goroutines, Files int
}

// Take returns the counts now.
func Take(t testing.TB) Counts {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open files: %v", err)
	}
	return Counts{Goroutines: runtime.NumGoroutine(), Files: len(entries)}
}

// Settle waits up to d for the counts to come back to base or below, as
// the code under test lets go of what it held, and fails the test with
// both counts if they do not. It returns the last counts taken.
func Settle(t testing.TB, base Counts, d time.Duration) Counts {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		now := Take(t)
		if now.Goroutines <= base.Goroutines && now.Files <= base.Files {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines (baseline %d), %d open files (baseline %d)", now.Goroutines, base.Goroutines, now.Files, base.Files)
			return now
		}
		time.Sleep(20 * time.Millisecond) // polls the counts; it waits for nothing else
	}
}
