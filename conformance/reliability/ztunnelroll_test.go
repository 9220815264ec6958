package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// ztunnelRoll rolls the ztunnel DaemonSet (a changed pod annotation, as an
// upgrade does) while a pod on each node opens new connections to the
// echo Service in a loop and a pod holds long-lived connections opened
// before the roll. New connections: none may fail. Long-lived ones: each
// must end finished or cleanly closed (the drain's end), never hung.
func ztunnelRoll(t *testing.T) {
	e := newEnv(t, "zroll")
	url := "http://" + e.echo(e.ns) + "/roll"

	dur := profile.pick(150*time.Second, 90*time.Second)
	loads := e.loadOnNodes("new", url, newConns(dur)...)
	// A request a second on each of 8 connections; 15 s without an answer
	// is a hang (the drain lasts 5 s).
	e.load("long", e.nodes[0], "", url, "-mode", "long", "-conns", "8", "-rate", "8", "-timeout", "15s", "-duration", durationArg(dur), "-warmup", "90s")
	e.measuring(append(loads, "long")...)

	before := e.k.Must("-n", istioNS, "get", "pods", "-l", "app=ztunnel", "-o", "jsonpath={.items[*].metadata.name}")
	start := time.Now()
	e.k.Must("-n", istioNS, "patch", "ds", "ztunnel", "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/reliability-roll":"%d"}}}}}`, start.Unix()))
	e.k.Must("-n", istioNS, "rollout", "status", "ds/ztunnel", "--timeout=300s")
	// The old pods are gone once their drain ended.
	old := strings.Fields(before)
	e.k.Eventually(t, 2*time.Minute, func(s string) bool {
		for _, p := range old {
			if strings.Contains(s, p) {
				return false
			}
		}
		return true
	}, "-n", istioNS, "get", "pods", "-l", "app=ztunnel", "-o", "jsonpath={.items[*].metadata.name}")
	rolled := time.Since(start)
	t.Logf("ztunnel rolled on %d nodes in %.1fs (old pods %v gone)", len(e.nodes), rolled.Seconds(), old)

	rs := e.results(dur+2*time.Minute, append(loads, "long")...)
	failed, total := sum(rs, loads...)
	long := rs["long"]
	if long.Conns == nil {
		t.Fatalf("the long-lived load reported no connections: %+v", long)
	}
	c := long.Conns
	e.figure("new connections failed %d of %d during the roll (%s; %s); long-lived connections: %d finished, %d closed cleanly, %d hung, %d failed of %d",
		failed, total, rs[loads[0]].Summary(), rs[loads[1]].Summary(), c.Finished, c.Closed, c.Hung, c.Failed, c.Finished+c.Closed+c.Hung+c.Failed)
	if failed != 0 {
		t.Errorf("%d of %d new connections failed during the roll; %s", failed, total, e.explainFailures(rs, loads))
	}
	if c.Hung != 0 || c.Failed != 0 {
		t.Errorf("long-lived connections: %d hung, %d failed (%s)", c.Hung, c.Failed, long.Summary())
	}
	// (The long-lived load ends when its connections do.)
	for _, n := range loads {
		if rs[n].EndMS < start.Add(rolled).UnixMilli() {
			t.Errorf("load %s ended before the roll did: it does not cover it", n)
		}
	}
}
