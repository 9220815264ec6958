package main_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// BenchmarkZtunnelChurn is make bench-footprint's churn in one process
// pair, for quick iteration on memory growth: two nodes' ztunnels, the
// first with churnPods local pods, carry new connections both ways (each
// one round trip) while the first node's pods are replaced one at a time.
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
	cfg := "workloads:\n" +
		"- {name: a, namespace: default, serviceAccount: sa-a, addresses: [10.1.1.2], node: n1}\n" +
		"- {name: b, namespace: default, serviceAccount: sa-b, addresses: [10.2.1.2], node: n2}\n"
	m := newMesh(b)
	m.writeConfig(cfg)
	n1, n2 := m.newNode("n1"), m.newNode("n2")
	link(b, n1, n2, "10.10.0.1", "10.10.0.2")
	a := n1.addPod("a", "10.1.1.2", "sa-a", true)
	bp := n2.addPod("b", "10.2.1.2", "sa-b", true)
	serveEchoRaw(b, a, echoPort)
	serveEchoRaw(b, bp, echoPort)

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
		err := n1.agent.AddWorkload(b.Context(), zds.Workload{UID: uid, Name: "pause-" + strconv.Itoa(next), Namespace: "churn", ServiceAccount: "pause"}, ns.File)
		if err != nil && !isNotConnected(err) {
			b.Fatal(err)
		}
		next++
		pods = append(pods, churned{uid, ns})
	}
	for range churnPods {
		add()
	}
	quiet := []string{"--log-level", "warn", "--worker-threads", "1"}
	profiles := os.Getenv("SKIFF_CHURN_PROFILES")
	if profiles != "" {
		quiet = append(quiet, "--heap-profile-rate", "1") // every allocation
	}
	zs := []*ztunnel{n1.startZtunnel(defaultPorts, quiet...), n2.startZtunnel(defaultPorts, quiet...)}
	dialFrom := func(p *pod, host string) func(context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) {
			return inpodtest.Dial(ctx, p.ns.File, net.JoinHostPort(host, strconv.Itoa(echoPort)), netip.AddrPort{}, inpodtest.SocketOpts{})
		}
	}
	dials := []func(context.Context) (net.Conn, error){dialFrom(a, "10.2.1.2"), dialFrom(bp, "10.1.1.2")}
	for _, dial := range dials {
		waitRoundTrip(b, bounded(b), "mesh path not working", dial)
	}

	before := []memFigures{zs[0].memFigures(b, profiles, "n1-before"), zs[1].memFigures(b, profiles, "n2-before")}

	ctx, cancel := context.WithTimeout(b.Context(), d)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent, failed int
	for _, dial := range dials {
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
				err := func() error {
					// Not ctx: a connection under way when the churn
					// ends finishes.
					cctx, ccancel := context.WithTimeout(b.Context(), 5*time.Second)
					defer ccancel()
					c, err := dial(cctx)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					_, err = benchpeer.RoundTrips(c, 1024, 1)
					return err
				}()
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
			if err := n1.agent.DelWorkload(b.Context(), old.uid); err != nil && !isNotConnected(err) {
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
	}
}

type memFigures struct {
	anon                               int64
	heapInuse, heapLive, stacks, gcSys float64
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
		}
	}
	return f
}

func change[T int64 | float64](before, after T) string {
	return fmt.Sprintf("%.2f -> %.2f MiB (%.2fx)", float64(before)/(1<<20), float64(after)/(1<<20), float64(after)/float64(before))
}
