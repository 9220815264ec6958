package reliability

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// ztunnelCrash kills the ztunnel of one node twice with SIGKILL (the
// second time the kubelet waits before restarting it, which leaves it gone
// for a while). Meanwhile an enrolled pod on that node connects, a new
// connection at a time, to a listener outside the mesh: an answer while
// ztunnel is gone would be traffic that bypassed the mesh. The gone
// windows run from just after each kill to the new container's start
// (which the apiserver gives to the second, so the window is never too
// long); a second load pod sends mesh traffic throughout, and both must
// get answers again at the end without having restarted.
func ztunnelCrash(t *testing.T) {
	e := newEnv(t, "crash")
	meshIP := e.echo(e.ns)
	e.echo(e.out)
	node := e.nodes[0]
	// The listener outside the mesh, on the other node.
	outside := ""
	for _, p := range e.k.Pods(e.out, "app=echo") {
		if p.Node != node {
			outside = p.IP
		}
	}
	if outside == "" {
		t.Fatalf("no echo pod of %s outside node %s", e.out, node)
	}

	dur := profile.pick(100*time.Second, 70*time.Second)
	common := []string{"-mode", "new", "-conns", "1", "-duration", durationArg(dur), "-warmup", "90s"}
	e.load("probe", node, "", "http://"+outside+":8080/probe", append(common, "-rate", "20", "-timeout", "1s")...)
	e.load("mesh", node, "", "http://"+meshIP+"/mesh", append(common, "-rate", "10", "-timeout", "2s")...)
	e.measuring("probe", "mesh")

	zt := e.k.PodOn(t, istioNS, "app=ztunnel", node)
	status := func() (restarts int, ready bool, started time.Time) {
		out := e.k.Must("-n", istioNS, "get", "pod", zt, "-o",
			`jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].state.running.startedAt}`)
		f := strings.Fields(out)
		if len(f) > 0 {
			restarts, _ = strconv.Atoi(f[0])
		}
		ready = len(f) > 1 && f[1] == "true"
		if len(f) > 2 {
			started, _ = time.Parse(time.RFC3339, f[2])
		}
		return restarts, ready, started
	}
	var windows [][2]int64
	var down time.Duration
	for range 2 {
		before, _, _ := status()
		e.k.Signal(t, istioNS, zt, "istio-proxy", "SIGKILL")
		// Half a second for the process to die and for attempts in flight.
		from := time.Now().Add(500 * time.Millisecond)
		var started time.Time
		if !eventually(3*time.Minute, func() bool {
			n, ready, s := status()
			started = s
			return n > before && ready
		}) {
			t.Fatalf("ztunnel %s did not come back ready after SIGKILL", zt)
		}
		// startedAt has whole seconds, at or before the real start: the
		// window ends no later than ztunnel's return.
		if started.After(from) {
			windows = append(windows, [2]int64{from.UnixMilli(), started.UnixMilli()})
			down += started.Sub(from)
		}
	}
	t.Logf("ztunnel %s killed twice; gone windows (unix ms) %v", zt, windows)

	rs := e.results(dur+2*time.Minute, "probe", "mesh")
	probe, mesh := rs["probe"], rs["mesh"]
	bypass, attempts := 0, 0
	for _, w := range windows {
		ok, all := probe.OKWithin(w[0], w[1])
		bypass += ok
		attempts += all - ok
	}
	restarts := e.k.Must("-n", e.ns, "get", "pods", "probe", "mesh", "-o", `jsonpath={range .items[*]}{.status.containerStatuses[0].restartCount}{end}`)

	e.figure("plaintext bypass %d of %d attempts while ztunnel was gone (%.1fs in %d windows); mesh traffic on the node %s, answered again at the end: %v; client pods restarted: %v",
		bypass, bypass+attempts, down.Seconds(), len(windows), mesh.Summary(), mesh.LastOK() && probe.LastOK(), restarts != "00")
	if bypass != 0 {
		t.Errorf("%d connections to a listener outside the mesh were answered while ztunnel was gone: the pod bypassed the mesh", bypass)
	}
	if attempts == 0 {
		t.Errorf("no attempt fell while ztunnel was gone (windows %v): inconclusive", windows)
	}
	if !mesh.LastOK() || !probe.LastOK() {
		t.Errorf("traffic did not come back after ztunnel returned: mesh spans %v, probe spans %v", mesh.Spans, probe.Spans)
	}
	if restarts != "00" {
		t.Errorf("client pods restarted (restart counts %q)", restarts)
	}
}
