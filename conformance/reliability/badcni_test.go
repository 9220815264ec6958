package reliability

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// badPrimaryCNIConfig corrupts the primary CNI configuration of the second
// node (truncated JSON, as a half-written file leaves it) while pods on
// both nodes send requests to the echo Service. The node agent must leave
// the file as it is, say why on the node (an Event), and keep the node
// failing closed: a pod created there meanwhile, of a service account a
// DENY policy names, must not start outside the mesh. Writing the primary
// CNI's valid configuration back must chain skiff-cni again without a
// restart, and the waiting pod then starts enrolled (refused by the
// policy, which only the mesh can do).
func badPrimaryCNIConfig(t *testing.T) {
	e := newEnv(t, "badcni")
	e.serviceAccounts("denied")
	e.k.Apply(e.denyPolicy())
	url := "http://" + e.echo(e.ns) + "/badcni"
	outside := "http://" + e.echo(e.out) + "/outside"
	dur := profile.pick(150*time.Second, 90*time.Second)
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	e.measuring(loads...)

	node := e.nodes[1]
	primary := e.primaryCNIConfig(node)
	chained := e.nodeFile(node, primary)
	if !bytes.Contains(chained, []byte(`"skiff-cni"`)) {
		t.Fatalf("%s on %s does not chain skiff-cni before the scenario:\n%s", primary, node, chained)
	}
	original, err := withoutSkiff(chained)
	if err != nil {
		t.Fatalf("%s on %s: %v", primary, node, err)
	}
	fixed := false
	t.Cleanup(func() {
		if !fixed {
			e.writeNodeFile(node, primary, original)
		}
	})
	corrupt := chained[:len(chained)/2]
	start := time.Now()
	e.writeNodeFile(node, primary, corrupt)
	t.Logf("corrupted %s on %s", primary, node)

	warned := e.nodeEvent(node, "CNIChainingFailed", start, 90*time.Second)
	notReady := eventually(90*time.Second, func() bool {
		out, _ := e.k.Run("-n", istioNS, "get", "pods", "-l", "app=istio-cni-node", "--field-selector", "spec.nodeName="+node,
			"-o", "jsonpath={.items[*].status.containerStatuses[*].ready}")
		return out == "false"
	})
	e.k.Apply(kubetest.BoundToolbox(e.ns, "late", node, "denied"))
	// It cannot start while the configuration is corrupt.
	time.Sleep(profile.pick(30*time.Second, 15*time.Second)) // time for it to try, not a wait for something
	phaseBroken := e.k.Must("-n", e.ns, "get", "pod", "late", "-o", "jsonpath={.status.phase}")
	untouched := bytes.Equal(e.nodeFile(node, primary), corrupt)

	fixedAt := time.Now()
	e.writeNodeFile(node, primary, original)
	fixed = true
	t.Logf("wrote the primary CNI's configuration back to %s on %s", primary, node)
	rechained := eventually(60*time.Second, func() bool {
		return bytes.Contains(e.nodeFile(node, primary), []byte(`"skiff-cni"`))
	})
	recovered := e.nodeEvent(node, "CNIChained", fixedAt, 60*time.Second)
	e.k.Must("-n", e.ns, "wait", "--for=condition=Ready", "pod/late", "--timeout=300s")
	startedAfter := time.Since(fixedAt).Round(time.Second)
	annotated := eventually(60*time.Second, func() bool {
		out, _ := e.k.Run("-n", e.ns, "get", "pod", "late", "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
		return out == "enabled"
	})
	refused := eventually(60*time.Second, func() bool { return !e.canReach("late", url) })
	reachesOutside := eventually(60*time.Second, func() bool {
		_, err := e.k.Run("-n", e.ns, "exec", "late", "--", "echo-app", "get", "-timeout", "3s", outside)
		return err == nil
	})

	rs := e.results(dur+3*time.Minute, loads...)
	failed, total := sum(rs, loads...)
	e.figure("requests failed %d of %d while %s's CNI configuration was corrupt (%s; %s); file left untouched %v; node agent not ready %v; Event %q; pod created meanwhile: %s, then Ready %v after the fix, enrolled %v, refused by policy %v; chained again %v, Event %q",
		failed, total, node, rs[loads[0]].Summary(), rs[loads[1]].Summary(), untouched, notReady, warned,
		phaseBroken, startedAfter, annotated, refused && reachesOutside, rechained, recovered)
	if failed != 0 {
		t.Errorf("%d of %d requests failed; %s", failed, total, e.explainFailures(rs, loads))
	}
	if !untouched {
		t.Errorf("the corrupt %s on %s was changed", primary, node)
	}
	if warned == "" {
		t.Errorf("no CNIChainingFailed Event on node %s", node)
	} else if !strings.Contains(warned, filepath.Base(primary)) {
		t.Errorf("the CNIChainingFailed Event does not name %s: %q", primary, warned)
	}
	if !notReady {
		t.Errorf("the node agent on %s stayed ready with its plugin unchained", node)
	}
	if phaseBroken == "Running" {
		t.Errorf("a pod started on %s while its CNI configuration was corrupt", node)
	}
	if !rechained || recovered == "" {
		t.Errorf("after the fix: chained %v, CNIChained Event %q; want both", rechained, recovered)
	}
	if !annotated || !refused || !reachesOutside {
		t.Errorf("the pod created while the configuration was corrupt: annotated %v, refused by the policy %v, reaches a listener outside the mesh %v; want all", annotated, refused, reachesOutside)
	}
}

// nodeExec runs a command in node's mount and network namespaces.
func (e *env) nodeExec(node string, stdin []byte, args ...string) ([]byte, error) {
	i := strings.TrimPrefix(node, "skiff-node")
	cmd := exec.Command(filepath.Join(e.repo, "conformance/cluster/node-exec.sh"), append([]string{i}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%v on %s: %w: %s", args, node, err, stderr.String())
	}
	return out, nil
}

// primaryCNIConfig is the configuration file the node's runtime uses: the
// first of its directory in lexical order.
func (e *env) primaryCNIConfig(node string) string {
	e.t.Helper()
	const dir = "/etc/cni/net.d"
	out, err := e.nodeExec(node, nil, "ls", "-1", dir)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, n := range strings.Fields(string(out)) {
		switch path.Ext(n) {
		case ".conf", ".conflist", ".json":
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		e.t.Fatalf("no CNI configuration in %s on %s", dir, node)
	}
	return path.Join(dir, names[0])
}

func (e *env) nodeFile(node, file string) []byte {
	e.t.Helper()
	out, err := e.nodeExec(node, nil, "cat", file)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// writeNodeFile replaces file on node atomically, as a CNI writes its
// configuration.
func (e *env) writeNodeFile(node, file string, data []byte) {
	e.t.Helper()
	tmp := path.Join(path.Dir(file), fmt.Sprintf(".skiff-test-%x", sha256.Sum256(data))[:24])
	if _, err := e.nodeExec(node, data, "sh", "-c", `cat >"$1" && mv -f "$1" "$2"`, "sh", tmp, file); err != nil {
		e.t.Fatal(err)
	}
}

// nodeEvent waits up to d for an Event of the reason on node, recorded or
// seen again since since, and returns its note ("" if none came).
func (e *env) nodeEvent(node, reason string, since time.Time, d time.Duration) string {
	note := ""
	eventually(d, func() bool {
		out, err := e.k.Run("get", "events.v1.events.k8s.io", "-A", "-o", "json")
		if err != nil {
			return false
		}
		var list struct {
			Items []struct {
				Reason    string    `json:"reason"`
				Note      string    `json:"note"`
				EventTime time.Time `json:"eventTime"`
				Series    *struct {
					LastObservedTime time.Time `json:"lastObservedTime"`
				} `json:"series"`
				Regarding struct{ Kind, Name string } `json:"regarding"`
			} `json:"items"`
		}
		if json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		for _, ev := range list.Items {
			last := ev.EventTime
			if ev.Series != nil && ev.Series.LastObservedTime.After(last) {
				last = ev.Series.LastObservedTime
			}
			// A second's slack: the apiserver keeps microseconds.
			if ev.Regarding.Kind == "Node" && ev.Regarding.Name == node && ev.Reason == reason && !last.Before(since.Add(-time.Second)) {
				note = ev.Note
				return true
			}
		}
		return false
	})
	return note
}

// withoutSkiff returns a configuration list without skiff-cni's entry: the
// primary CNI's own configuration.
func withoutSkiff(conf []byte) ([]byte, error) {
	var top map[string]any
	if err := json.Unmarshal(conf, &top); err != nil {
		return nil, err
	}
	plugins, ok := top["plugins"].([]any)
	if !ok {
		return nil, fmt.Errorf("no plugins list")
	}
	var kept []any
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == "skiff-cni" {
			continue
		}
		kept = append(kept, p)
	}
	top["plugins"] = kept
	return json.MarshalIndent(top, "", "  ")
}
