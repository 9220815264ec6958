package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// BenchmarkZtunnelChurn is make bench-footprint's churn in one process
// pair, for quick iteration on memory growth: two nodes' ztunnels, the
// first with churnPods local pods, carry new connections both ways (each
// a greeting and one echo) while the first node's pods are replaced one at a time.
// It prints each ztunnel's anonymous RSS, heap and stacks before and
// after, each after forced collections, as make bench-footprint's figures
// settle. SKIFF_CHURN sets how long it churns (default 1m);
// SKIFF_CHURN_PROFILES, a directory, gets exact heap profiles of both
// ztunnels before and after (n1-before.pb.gz, ...).
func BenchmarkZtunnelChurn(b *testing.B) {
	inpodtest.RequireRoot(b)
	d := time.Minute
	if v := os.Getenv("SKIFF_CHURN"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			b.Fatalf("SKIFF_CHURN=%q: %v", v, err)
		}
	}
	const churnPods = 100
	quiet := []string{"--log-level", "warn", "--worker-threads", "1"}
	profiles := os.Getenv("SKIFF_CHURN_PROFILES")
	if profiles != "" {
		quiet = append(quiet, "--heap-profile-rate", "1") // every allocation
	}
	w := twoNodes(b, "", quiet...)
	zs := []*ztunnel{w.n1.z, w.n2.z}

	// Pods come and go as a Deployment's do: one service account, a new
	// name and UID each.
	type churned struct {
		uid string
		ns  *inpodtest.NetNS
	}
	var pods []churned
	next := 0
	add := func() {
		ns := inpodtest.NewNetNS(b, "ztc-")
		uid := "churn-" + strconv.Itoa(next)
		if err := w.n1.agent.AddWorkload(b.Context(), zds.Workload{UID: uid, Name: "pause-" + strconv.Itoa(next), Namespace: "churn", ServiceAccount: "pause"}, ns.File); err != nil {
			b.Fatal(err)
		}
		next++
		pods = append(pods, churned{uid, ns})
	}
	for range churnPods {
		add()
	}
	// Each connection: a greeting, then one echo.
	conns := []func() error{
		func() error { _, err := w.a.greet(b, "10.2.1.2:8080"); return err },
		func() error { _, err := w.b.greet(b, "10.1.1.2:8080"); return err },
	}
	// The pooled connections and certificates, before the first figures:
	// the first connection each way goes over TCP and learns that the
	// peer takes QUIC, the next ones set QUIC up.
	for range 3 {
		for _, conn := range conns {
			if err := conn(); err != nil {
				b.Fatal(err)
			}
		}
	}

	before := []memFigures{zs[0].memFigures(b, profiles, "n1-before"), zs[1].memFigures(b, profiles, "n2-before")}

	ctx, cancel := context.WithTimeout(b.Context(), d)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent, failed int
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond) // 20 connections/s each way
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				err := conn()
				mu.Lock()
				sent++
				if err != nil {
					failed++
					b.Errorf("connection failed: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	replaced := 0
	tick := time.NewTicker(time.Second)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			old := pods[0]
			pods = pods[1:]
			if err := w.n1.agent.DelWorkload(b.Context(), old.uid); err != nil {
				b.Fatal(err)
			}
			if err := old.ns.Delete(); err != nil {
				b.Fatal(err)
			}
			add()
			replaced++
		}
	}
	tick.Stop()
	wg.Wait()
	after := []memFigures{zs[0].memFigures(b, profiles, "n1-after"), zs[1].memFigures(b, profiles, "n2-after")}
	fmt.Printf("churn for %s: %d pods replaced on n1, %d connections (%d failed)\n", d, replaced, sent, failed)
	for i, z := range []string{"n1 (churned pods)", "n2"} {
		bf, af := before[i], after[i]
		fmt.Printf("ztunnel %s: anonymous RSS %s\n", z, change(bf.anon, af.anon))
		fmt.Printf("  heap in use %s, of it live %s; stacks %s; GC metadata %s\n",
			change(bf.heapInuse, af.heapInuse), change(bf.heapLive, af.heapLive), change(bf.stacks, af.stacks), change(bf.gcSys, af.gcSys))
		fmt.Printf("  OS threads %.0f -> %.0f, goroutines %.0f -> %.0f\n", bf.threads, af.threads, bf.goroutines, af.goroutines)
	}
}

type memFigures struct {
	anon                               int64
	heapInuse, heapLive, stacks, gcSys float64
	threads, goroutines                float64
}

// memFigures reads the ztunnel's memory after a few forced collections.
// With dir set, it writes the heap profile there as name.pb.gz.
func (z *ztunnel) memFigures(b *testing.B, dir, name string) memFigures {
	z.rss(b)
	if dir != "" {
		_, prof, err := z.get(z.ports.admin, "/debug/pprof/heap")
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name+".pb.gz"), []byte(prof), 0o644)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	var f memFigures
	f.anon, _ = rssParts(z.cmd.Process.Pid)
	_, body, err := z.get(z.ports.metrics, "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(value, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			f.heapInuse = v
		case "go_memstats_stack_inuse_bytes":
			f.stacks = v
		case "go_memstats_heap_alloc_bytes":
			f.heapLive = v
		case "go_memstats_gc_sys_bytes":
			f.gcSys = v
		case "go_threads":
			f.threads = v
		case "go_goroutines":
			f.goroutines = v
		}
	}
	return f
}

func change[T int64 | float64](before, after T) string {
	return fmt.Sprintf("%.2f -> %.2f MiB (%.2fx)", float64(before)/(1<<20), float64(after)/(1<<20), float64(after)/float64(before))
}
