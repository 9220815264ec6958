// Package exepages gives back the memory that a long-running process's own
// executable holds while that code is not running (and, in Run, the free
// pages of its Go heap).
//
// The kernel maps a binary's code and read-only data into the process as it
// touches them, and around each fault it maps the neighbouring pages that
// are in the page cache too (fault-around, 64 KiB). Nothing unmaps them
// later. A Go daemon touches much of its binary while it starts (package
// initialisation, flags, the first configuration) and little of it
// afterwards, so nearly all of the binary stays resident and counts in its
// RSS: 17 of ztunnel's 19 MiB, more than its heap.
//
// Release unmaps those pages with madvise(MADV_DONTNEED). They stay in the
// page cache, so the next touch of one is a minor fault, not a disk read,
// and RSS comes back to the pages the process uses. Only read-only mappings
// of the executable that hold no anonymous page are released: anything the
// process or a loader wrote into a private mapping, MADV_DONTNEED would
// discard.
package exepages

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"
)

// Result is the process's file-backed resident memory, in bytes, before
// and after a release.
type Result struct {
	Before, After int64
}

// Release unmaps the executable's read-only pages from this process.
func Release() (Result, error) {
	var res Result
	var err error
	if res.Before, err = fileResident(); err != nil {
		return res, err
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return res, fmt.Errorf("executable: %w", err)
	}
	smaps, err := os.Open("/proc/self/smaps")
	if err != nil {
		return res, err
	}
	spans, err := releasable(smaps, exe)
	smaps.Close()
	if err != nil {
		return res, err
	}
	if len(spans) == 0 {
		return res, fmt.Errorf("no read-only mapping of %s without anonymous pages in /proc/self/smaps", exe)
	}
	for _, s := range spans {
		// The raw system call takes the addresses as they are: these
		// ranges are not Go memory, and no Go pointer to them is needed.
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED)
		if errno != 0 {
			return res, fmt.Errorf("madvise %#x-%#x: %w", s.start, s.end, errno)
		}
	}
	res.After, err = fileResident()
	return res, err
}

// Run releases the executable's pages every interval until ctx is done,
// and with them the Go heap's free pages (debug.FreeOSMemory). The Go
// runtime gives free heap back slowly and keeps about a tenth above its
// next goal, so after a burst of work a daemon would hold for minutes
// memory it no longer uses; this costs a garbage collection per interval,
// about a millisecond of CPU on a heap of a few MiB. The first release
// comes one interval after the start, when start-up is over. A failure to
// release the executable's pages is logged once and not tried again: it
// would fail again.
func Run(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	exe := true
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		debug.FreeOSMemory()
		if !exe {
			continue
		}
		res, err := Release()
		if err != nil {
			logger.Warn("cannot release the binary's unused pages; they stay resident", "err", err)
			exe = false
			continue
		}
		level := slog.LevelDebug
		if first {
			level = slog.LevelInfo
		}
		logger.Log(ctx, level, "released the binary's unused pages",
			"residentFileBefore", mib(res.Before), "residentFileAfter", mib(res.After), "every", interval.String())
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

// fileResident is the process's resident file-backed and shared memory
// (the third field of /proc/self/statm, in pages).
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	pages, err := parseStatmShared(b)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}
