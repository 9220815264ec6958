package kubetest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// LoadPod returns the manifest of a pod on node that runs the echo app's
// load generator (echo load URL args...) once and stays Succeeded with its
// result in its log: unlike kubectl exec, its traffic and its result do
// not depend on the apiserver while it runs. serviceAccount may be empty.
func LoadPod(ns, name, node, serviceAccount, url string, args ...string) string {
	sa := ""
	if serviceAccount != "" {
		sa = "\n  serviceAccountName: " + serviceAccount
	}
	cmd := []string{`"/echo"`, `"load"`, fmt.Sprintf("%q", url)}
	for _, a := range args {
		cmd = append(cmd, fmt.Sprintf("%q", a))
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: {app: load}
spec:%s
  nodeSelector: {kubernetes.io/hostname: %s}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: load
    image: skiff.local/echo:dev
    imagePullPolicy: IfNotPresent
    command: [%s]
`, name, ns, sa, node, strings.Join(cmd, ", "))
}

// LoadResult is what the echo app's load generator prints (conformance/testapps/echo).
type LoadResult struct {
	Mode    string         `json:"mode"`
	Target  string         `json:"target"`
	StartMS int64          `json:"start_ms"`
	EndMS   int64          `json:"end_ms"`
	OK      int            `json:"ok"`
	Failed  int            `json:"failed"`
	Errors  map[string]int `json:"errors"`
	Pods    map[string]int `json:"pods"`
	Spans   []LoadSpan     `json:"spans"`
	Conns   *struct {
		Finished int `json:"finished"`
		Closed   int `json:"closed"`
		Hung     int `json:"hung"`
		Failed   int `json:"failed"`
	} `json:"conns"`
}

// LoadSpan is a run of attempts with one outcome, in unix milliseconds.
type LoadSpan struct {
	OK     bool  `json:"ok"`
	N      int   `json:"n"`
	FromMS int64 `json:"from_ms"`
	ToMS   int64 `json:"to_ms"`
}

// Total is the number of requests made.
func (r *LoadResult) Total() int { return r.OK + r.Failed }

// Summary is "failed N of M" with the reasons, for test logs.
func (r *LoadResult) Summary() string {
	s := fmt.Sprintf("failed %d of %d", r.Failed, r.Total())
	if len(r.Errors) > 0 {
		reasons := make([]string, 0, len(r.Errors))
		for k, v := range r.Errors {
			reasons = append(reasons, fmt.Sprintf("%s: %d", k, v))
		}
		sort.Strings(reasons)
		s += " (" + strings.Join(reasons, ", ") + ")"
	}
	return s
}

// OKWithin counts the answered attempts of runs that lie within [from, to]
// (unix milliseconds), and the attempts of all runs that do.
func (r *LoadResult) OKWithin(from, to int64) (ok, all int) {
	for _, s := range r.Spans {
		if s.ToMS < from || s.FromMS > to {
			continue
		}
		all += s.N
		if s.OK {
			ok += s.N
		}
	}
	return ok, all
}

// FailedRuns lists the runs of failed attempts as "N at +A-Bs", in
// seconds after origin (unix milliseconds), for a test log that says when
// a scenario's failures happened.
func (r *LoadResult) FailedRuns(origin int64) string { return r.runs(origin, false) }

// OKRuns lists the runs of answered attempts alike, for a scenario in
// which no answer is the pass.
func (r *LoadResult) OKRuns(origin int64) string { return r.runs(origin, true) }

func (r *LoadResult) runs(origin int64, ok bool) string {
	var out []string
	for _, s := range r.Spans {
		if s.OK == ok {
			out = append(out, fmt.Sprintf("%d at %+.1f-%.1fs", s.N, float64(s.FromMS-origin)/1000, float64(s.ToMS-origin)/1000))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// LastOK reports whether the last run of attempts was answered: traffic
// flowed again by the end.
func (r *LoadResult) LastOK() bool {
	return len(r.Spans) > 0 && r.Spans[len(r.Spans)-1].OK
}

// ParseLoad finds the load generator's JSON line in a pod's log.
func ParseLoad(log string) (*LoadResult, error) {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var r LoadResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return nil, fmt.Errorf("load result: %w", err)
		}
		return &r, nil
	}
	return nil, fmt.Errorf("no load result in the log:\n%s", log)
}

// WaitMeasuring waits until the load pod's generator has warmed up and
// begun to measure.
func (k *Kubectl) WaitMeasuring(t *testing.T, ns, pod string, d time.Duration) {
	t.Helper()
	k.Eventually(t, d, func(s string) bool { return strings.Contains(s, "load: measuring") },
		"-n", ns, "logs", pod)
}

// LoadResult waits up to d for a load pod to end and returns its result.
func (k *Kubectl) LoadResult(t *testing.T, ns, pod string, d time.Duration) *LoadResult {
	t.Helper()
	k.Eventually(t, d, func(s string) bool { return s == "Succeeded" || s == "Failed" },
		"-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.phase}")
	log := k.Must("-n", ns, "logs", pod)
	r, err := ParseLoad(log)
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, pod, err)
	}
	return r
}
