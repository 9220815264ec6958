package footprint

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// component is one of Skiff's processes, found by its pods' labels.
type component struct {
	name     string
	ns       string
	selector string
	port     int // its /metrics port, for go_goroutines
}

var (
	cniAgent   = component{"cni-agent", "istio-system", "app=istio-cni-node", 15014}
	components = []component{
		{"ztunnel", "istio-system", "app=ztunnel", 15020},
		cniAgent,
		{"istiod-lite", "istio-system", "app=istiod", 15014},
	}
)

// usage is what one container's process costs, read from the host: the
// local cluster's nodes share its PID namespace.
type usage struct {
	RSS, Anon, File int64 // bytes resident: all, anonymous, file-backed (the binary's pages)
	Cgroup          int64 // the container's cgroup memory (memory.current, or usage_in_bytes on cgroup v1)
	CgroupFile      int64 // of it, page cache (memory.stat's file, or cache on v1): pages of files the container read, the binary's among them
	Binary          int64 // size of the executable
	Heap            int64 // Go heap in use (go_memstats_heap_inuse_bytes); -1 if not exported
	Goroutines      int   // from go_goroutines; -1 if not exported
	Threads         int
	FDs             int
	NetNS           int // open network-namespace handles
}

// podProcess is the host PID of the first container of ns/pod, from its
// node's containerd.
func podProcess(t *testing.T, k *kubetest.Kubectl, ns, pod string) int {
	t.Helper()
	node := k.Must("-n", ns, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}")
	id, ok := strings.CutPrefix(k.Must("-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}"), "containerd://")
	if !ok {
		t.Fatalf("pod %s/%s has no containerd container", ns, pod)
	}
	sock, err := kubetest.NodeSocket(node)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls on %s: %v\n%s", node, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("ctr tasks ls: %q: %v", l, err)
			}
			return pid
		}
	}
	t.Fatalf("pod %s/%s: container %s is not running on %s", ns, pod, id, node)
	return 0
}

// readUsage reads the figures of process pid.
func readUsage(pid int) (usage, error) {
	var u usage
	proc := fmt.Sprintf("/proc/%d", pid)
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		return u, err
	}
	kb := map[string]*int64{"VmRSS:": &u.RSS, "RssAnon:": &u.Anon, "RssFile:": &u.File}
	s := bufio.NewScanner(bytes.NewReader(status))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 {
			continue
		}
		if p := kb[f[0]]; p != nil {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return u, fmt.Errorf("%s/status: %q: %w", proc, s.Text(), err)
			}
			*p = n * 1024
		}
		if f[0] == "Threads:" {
			u.Threads, _ = strconv.Atoi(f[1])
		}
	}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(proc, "fd", fd.Name())); err == nil && strings.HasPrefix(l, "net:[") {
			u.NetNS++
		}
	}
	if fi, err := os.Stat(proc + "/exe"); err == nil {
		u.Binary = fi.Size()
	}
	u.Cgroup, u.CgroupFile, err = cgroupMemory(proc)
	return u, err
}

// cgroupMemory is the memory charged to the cgroup of the process at proc
// (memory.current on cgroup v2, memory.usage_in_bytes on v1), and the page
// cache among it. A page of a file is charged to the cgroup that reads it
// into the cache, so this part grows when the kernel reclaims pages of the
// binary that the process then touches again.
func cgroupMemory(proc string) (total, file int64, err error) {
	b, err := os.ReadFile(proc + "/cgroup")
	if err != nil {
		return 0, 0, err
	}
	var dir, current, cacheKey string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case strings.Contains(","+f[1]+",", ",memory,"):
			dir, current, cacheKey = "/sys/fs/cgroup/memory"+f[2], "memory.usage_in_bytes", "cache"
		case f[0] == "0" && f[1] == "" && dir == "":
			dir, current, cacheKey = "/sys/fs/cgroup"+f[2], "memory.current", "file"
		}
	}
	if dir == "" {
		return 0, 0, fmt.Errorf("%s/cgroup names no memory cgroup", proc)
	}
	v, err := os.ReadFile(filepath.Join(dir, current))
	if err != nil {
		return 0, 0, err
	}
	if total, err = strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", filepath.Join(dir, current), err)
	}
	stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(stat), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == cacheKey {
			if file, err = strconv.ParseInt(v, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("%s: %q: %w", filepath.Join(dir, "memory.stat"), l, err)
			}
		}
	}
	return total, file, nil
}

// scrape reads a pod's /metrics through the apiserver's pod proxy and
// returns its samples without labels, by name; nil if it cannot.
func scrape(k *kubetest.Kubectl, ns, pod string, port int) map[string]float64 {
	out, err := k.Run("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", ns, pod, port))
	if err != nil {
		return nil
	}
	samples := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || strings.ContainsAny(name, "{#") {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			samples[name] = n
		}
	}
	return samples
}

// readMetrics fills the figures the process exports itself (go_goroutines
// and go_memstats_heap_inuse_bytes); they stay -1 if it does not export them.
func readMetrics(k *kubetest.Kubectl, c component, pod string, u *usage) {
	u.Goroutines, u.Heap = -1, -1
	m := scrape(k, c.ns, pod, c.port)
	if v, ok := m["go_goroutines"]; ok {
		u.Goroutines = int(v)
	}
	if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
		u.Heap = int64(v)
	}
}
