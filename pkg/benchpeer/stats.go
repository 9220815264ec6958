package benchpeer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"
)

// RoundTrips sends n messages of size bytes over c, each after the echo of
// the previous one came back, and returns each round trip's duration.
func RoundTrips(c net.Conn, size, n int) ([]time.Duration, error) {
	msg := bytes.Repeat([]byte{'x'}, size)
	buf := make([]byte, size)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("read echo: %w", err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// Percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method. It sorts ds in place.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(p/100*float64(len(ds))+0.5) - 1
	rank = max(0, min(rank, len(ds)-1))
	return ds[rank]
}

// RSS returns the resident set size of process pid in bytes, read from
// /proc/<pid>/status.
func RSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// PeakRSS returns the largest resident set size process pid has had, in
// bytes (VmHWM in /proc/<pid>/status).
func PeakRSS(pid int) (int64, error) { return statusBytes(pid, "VmHWM") }

// statusBytes reads one "<key>: <n> kB" field of /proc/<pid>/status.
func statusBytes(pid int, key string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		v, ok := bytes.CutPrefix([]byte(line), []byte(key+":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(v)
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s %q: %w", key, line, err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}
