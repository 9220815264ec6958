// Package cluster holds the smoke test of the local test cluster made by
// up.sh (make cluster). The scripts next to this file are the cluster tooling.
package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const smokeNS = "skiff-smoke"

// TestSmoke brings the local cluster up (or reuses a healthy one), checks
// that it behaves like a multi-node cluster, and leaves it running; only the
// test's namespace is deleted at the end, when the test passed.
//
//	SKIFF_E2E=1 go test ./conformance/cluster -run TestSmoke -v -timeout 30m
func TestSmoke(t *testing.T) {
	kubetest.RequireE2E(t)
	up := exec.Command("./up.sh")
	up.Stdout, up.Stderr = os.Stdout, os.Stderr
	if err := up.Run(); err != nil {
		t.Fatalf("up.sh: %v", err)
	}
	k := kubetest.New(t)

	nodes := strings.Fields(k.Must("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(nodes) < 2 {
		t.Fatalf("want at least 2 nodes, got %v", nodes)
	}
	nodeIPs := map[string]string{}
	for _, n := range nodes {
		nodeIPs[n] = k.Must("get", "node", n, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	}
	t.Logf("nodes: %v", nodeIPs)

	k.Run("delete", "namespace", smokeNS, "--ignore-not-found", "--wait=true", "--timeout=120s")
	k.Apply(smokeManifests())
	k.Must("-n", smokeNS, "rollout", "status", "deploy/echo", "--timeout=180s")
	k.Must("-n", smokeNS, "rollout", "status", "ds/hostnet", "--timeout=180s")
	k.Must("-n", smokeNS, "rollout", "status", "ds/hostpath", "--timeout=180s")
	k.Must("-n", smokeNS, "wait", "--for=condition=Ready", "pod/client", "--timeout=180s")

	// The 4 echo replicas are spread over the nodes.
	type pod struct{ name, ip, node string }
	var echo []pod
	perNode := map[string]int{}
	for _, l := range strings.Split(k.Must("-n", smokeNS, "get", "pods", "-l", "app=echo", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}`), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 {
			echo = append(echo, pod{f[0], f[1], f[2]})
			perNode[f[2]]++
		}
	}
	if len(echo) != 4 {
		t.Fatalf("want 4 echo pods, got %v", echo)
	}
	for _, n := range nodes[:2] {
		if perNode[n] == 0 {
			t.Fatalf("echo pods not spread over the nodes: %v", perNode)
		}
	}
	t.Logf("echo pods per node: %v", perNode)
	clientNode := k.Must("-n", smokeNS, "get", "pod", "client", "-o", "jsonpath={.spec.nodeName}")

	t.Run("pod-to-pod across nodes", func(t *testing.T) {
		crossed := false
		for _, p := range echo {
			out := k.Eventually(t, 30*time.Second, nil, "-n", smokeNS, "exec", "client", "--",
				"echo-app", "get", fmt.Sprintf("http://%s:8080/", p.ip))
			if !strings.Contains(out, "pod="+p.name+"\n") || !strings.Contains(out, "node="+p.node+"\n") {
				t.Errorf("GET %s (pod %s on %s): unexpected answer:\n%s", p.ip, p.name, p.node, out)
			}
			crossed = crossed || p.node != clientNode
		}
		if !crossed {
			t.Errorf("no echo pod on another node than the client (%s)", clientNode)
		}
	})
	t.Run("pod to ClusterIP", func(t *testing.T) {
		ip := k.Must("-n", smokeNS, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
		seen := map[string]bool{}
		deadline := time.Now().Add(60 * time.Second)
		for len(seen) < 2 && time.Now().Before(deadline) {
			out, err := k.Run("-n", smokeNS, "exec", "client", "--", "echo-app", "get", "-timeout", "3s", "http://"+ip+"/")
			if m := regexp.MustCompile(`node=(\S+)`).FindStringSubmatch(out); err == nil && m != nil {
				seen[m[1]] = true
			} else {
				time.Sleep(500 * time.Millisecond)
			}
		}
		if len(seen) < 2 {
			t.Errorf("ClusterIP %s: answers came from nodes %v, want both", ip, seen)
		}
	})
	t.Run("gRPC to the Service by name", func(t *testing.T) {
		out := k.Eventually(t, 60*time.Second, nil, "-n", smokeNS, "exec", "client", "--",
			"echo-app", "grpc", "echo:9090", "-message", "ping")
		if !strings.Contains(out, "message=ping\n") || !strings.Contains(out, "namespace="+smokeNS) {
			t.Errorf("gRPC Echo via echo:9090: %s", out)
		}
	})
	t.Run("DNS", func(t *testing.T) {
		out := k.Eventually(t, 60*time.Second, nil, "-n", smokeNS, "exec", "client", "--",
			"nslookup", "kubernetes.default.svc.cluster.local")
		if !strings.Contains(out, "10.96.0.1") {
			t.Errorf("nslookup kubernetes.default: %s", out)
		}
		out = k.Eventually(t, 60*time.Second, nil, "-n", smokeNS, "exec", "client", "--",
			"echo-app", "get", "http://echo/")
		if !strings.Contains(out, "namespace="+smokeNS) {
			t.Errorf("GET http://echo/ (search path): %s", out)
		}
	})
	t.Run("exec and logs", func(t *testing.T) {
		out := k.Must("-n", smokeNS, "exec", echo[0].name, "--", "/echo", "get", "http://127.0.0.1:8080/x")
		if !strings.Contains(out, "path=/x") {
			t.Errorf("exec: %s", out)
		}
		logs := k.Must("-n", smokeNS, "logs", echo[0].name)
		if !strings.Contains(logs, "listening") || !strings.Contains(logs, "path=/x") {
			t.Errorf("logs of %s lack the expected lines:\n%s", echo[0].name, logs)
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, k.Bin, "--kubeconfig", k.Cfg, "-n", smokeNS, "port-forward",
			"--address", "127.0.0.1", "pod/"+echo[0].name, ":8080")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		defer func() { cancel(); cmd.Wait() }()
		port := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					port <- m[1]
				}
			}
		}()
		select {
		case p := <-port:
			body, err := httpGet("http://127.0.0.1:" + p + "/pf")
			if err != nil || !strings.Contains(body, "pod="+echo[0].name) {
				t.Errorf("GET through port-forward: %v\n%s", err, body)
			}
		case <-time.After(30 * time.Second):
			t.Error("port-forward did not start")
		}
	})
	t.Run("hostNetwork DaemonSet on the same port on every node", func(t *testing.T) {
		for n, ip := range nodeIPs {
			var body string
			var err error
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
				if body, err = httpGet("http://" + ip + ":18080/"); err == nil {
					break
				}
			}
			if err != nil || !strings.Contains(body, "node="+n+"\n") || !strings.Contains(body, "pod_ip="+ip+"\n") {
				t.Errorf("GET %s:18080 (node %s): %v\n%s", ip, n, err, body)
			}
		}
	})
	t.Run("hostNetwork pod to ClusterIP", func(t *testing.T) {
		ip := k.Must("-n", smokeNS, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
		for _, p := range strings.Fields(k.Must("-n", smokeNS, "get", "pods", "-l", "app=hostnet", "-o", "jsonpath={.items[*].metadata.name}")) {
			out := k.Eventually(t, 30*time.Second, nil, "-n", smokeNS, "exec", p, "--", "/echo", "get", "http://"+ip+"/")
			if !strings.Contains(out, "namespace="+smokeNS) {
				t.Errorf("GET %s from %s: %s", ip, p, out)
			}
		}
	})
	t.Run("hostPath per node", func(t *testing.T) {
		pods := k.Must("-n", smokeNS, "get", "pods", "-l", "app=hostpath", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}`)
		count := 0
		for _, l := range strings.Split(pods, "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			count++
			// Every pod wrote its node name at start; a shared host path
			// would hold the last writer's name for both.
			out := k.Eventually(t, 30*time.Second, nil, "-n", smokeNS, "exec", f[0], "--", "cat", "/host-run/skiff-smoke/owner")
			if strings.TrimSpace(out) != f[1] {
				t.Errorf("pod %s on %s reads %q from its node's /var/run/skiff-smoke/owner", f[0], f[1], out)
			}
			num := strings.TrimPrefix(f[1], "skiff-node")
			b, err := os.ReadFile(filepath.Join(kubetest.StateDir(), "node"+num, "root", "run", "skiff-smoke", "owner"))
			if err != nil || strings.TrimSpace(string(b)) != f[1] {
				t.Errorf("node %s's /var/run/skiff-smoke/owner on the host side: %q, %v", f[1], b, err)
			}
		}
		if count != len(nodes) {
			t.Errorf("hostpath DaemonSet has %d pods, want %d", count, len(nodes))
		}
	})
	if !t.Failed() {
		k.Run("delete", "namespace", smokeNS, "--wait=false")
	}
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}

func smokeManifests() string {
	return `apiVersion: v1
kind: Namespace
metadata:
  name: ` + smokeNS + `
---
` + kubetest.Echo(smokeNS, 4, "") + `---
` + kubetest.Client(smokeNS, "skiff-node1", "") + `---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hostnet
  namespace: ` + smokeNS + `
spec:
  selector:
    matchLabels: {app: hostnet}
  template:
    metadata:
      labels: {app: hostnet}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: skiff.local/echo:dev
        imagePullPolicy: IfNotPresent
        args: [serve, -listen, ":18080"]
        ports: [{containerPort: 18080, hostPort: 18080}]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hostpath
  namespace: ` + smokeNS + `
spec:
  selector:
    matchLabels: {app: hostpath}
  template:
    metadata:
      labels: {app: hostpath}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: writer
        image: skiff.local/toolbox:dev
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'mkdir -p /host-run/skiff-smoke && echo "$NODE_NAME" > /host-run/skiff-smoke/owner && exec sleep 3600']
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        volumeMounts:
        - {name: run, mountPath: /host-run}
      volumes:
      - name: run
        hostPath: {path: /var/run, type: Directory}
`
}
