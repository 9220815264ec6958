package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// apiserverUnavailable stops the kube-apiserver (SIGSTOP: it neither
// answers nor refuses, as a hung or partitioned one) for a minute (30 s in
// the short profile) while pods on both nodes send requests to the echo
// Service: the data path must carry on with its last configuration. When
// it is back (SIGCONT), a pod created then must be served and a policy
// applied then must take effect: istiod-lite, ztunnel and the node agent
// resynchronised. A watchdog
// process started before the stop resumes the apiserver even if the test
// dies meanwhile.
func apiserverUnavailable(t *testing.T) {
	e := newEnv(t, "apiserver")
	e.serviceAccounts("denied")
	url := "http://" + e.echo(e.ns) + "/apiserver"
	e.toolbox("denied", e.nodes[1], "denied")
	if !eventually(90*time.Second, func() bool { return e.canReach("denied", url) }) {
		t.Fatal("the pod with service account denied cannot reach echo before the outage")
	}

	apiserverDown := profile.pick(time.Minute, 30*time.Second)
	dur := apiserverDown + profile.pick(150*time.Second, 75*time.Second)
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	e.measuring(loads...)

	b, err := os.ReadFile(filepath.Join(kubetest.StateDir(), "pids", "kube-apiserver"))
	if err != nil {
		t.Fatalf("the apiserver's pid (up.sh's pids file): %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("the apiserver's pid file holds %q", b)
	}
	// The watchdog resumes the apiserver whatever happens to this test.
	watchdog := exec.Command("sh", "-c", fmt.Sprintf("sleep %d; kill -CONT %d", int((apiserverDown+30*time.Second)/time.Second), pid))
	watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := watchdog.Start(); err != nil {
		t.Fatalf("watchdog: %v", err)
	}
	resume := func() {
		syscall.Kill(pid, syscall.SIGCONT)
		watchdog.Process.Kill()
		watchdog.Wait()
	}
	t.Cleanup(resume)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP apiserver (pid %d): %v", pid, err)
	}
	stopped := time.Now()
	time.Sleep(apiserverDown) // the outage itself, not a wait for something
	resume()
	t.Logf("apiserver resumed after %.1fs", time.Since(stopped).Seconds())
	e.k.Eventually(t, 2*time.Minute, nil, "get", "--raw", "/readyz")
	e.k.Eventually(t, 3*time.Minute, nil, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=10s")

	// Resynchronised: a new pod is served, a new policy applies.
	e.toolbox("late", e.nodes[0], "client")
	lateServed := eventually(90*time.Second, func() bool { return e.canReach("late", url) })
	e.k.Apply(e.denyPolicy())
	policyApplied := eventually(90*time.Second, func() bool { return !e.canReach("denied", url) })

	rs := e.results(dur+2*time.Minute, loads...)
	failed, total := sum(rs, loads...)
	during := 0
	for _, n := range loads {
		ok, all := rs[n].OKWithin(stopped.UnixMilli(), stopped.Add(apiserverDown).UnixMilli())
		during += all - ok
	}
	e.figure("requests failed %d of %d with the apiserver stopped for %v and after (%d failed in runs overlapping the stop; %s; %s); after its return: new pod served %v, new policy applied %v",
		failed, total, apiserverDown, during, rs[loads[0]].Summary(), rs[loads[1]].Summary(), lateServed, policyApplied)
	if failed != 0 {
		t.Errorf("%d of %d requests failed; %s", failed, total, e.explainFailures(rs, loads))
	}
	if !lateServed {
		t.Error("a pod created after the apiserver returned got no answer: no resynchronisation")
	}
	if !policyApplied {
		t.Error("a policy applied after the apiserver returned did not take effect: no resynchronisation")
	}
}
