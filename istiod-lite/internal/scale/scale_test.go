package scale

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/pkg/apis/apistest"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// rounds is how many times each kind of change is made.
const rounds = 5

// TestScale loads a cluster of the size while istiod-lite runs and
// a ztunnel is subscribed, then connects a second ztunnel (the full push),
// then makes changes of several kinds and checks that each reaches both
// ztunnels as exactly the resources it changed. It reports, never asserts,
// the times and sizes.
func TestScale(t *testing.T) {
	s := shapeFromEnv(t)
	env, cfg, _ := apistest.StartWithCRDs(t, apistest.ServiceIPRange("10.96.0.0/16"))
	ctx := context.Background()
	cl := newClients(t, cfg)

	// Two ztunnels' pods, for their tokens: istiod-lite serves the whole
	// mesh only to its node proxies (istio-system/ztunnel).
	if _, err := cl.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.cs.CoreV1().ServiceAccounts("istio-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, name := range []string{"ztunnel-a", "ztunnel-b"} {
		tokens[name] = cl.ztunnelToken(t, name)
	}

	istiod := startIstiod(t, env)
	roots := cl.roots(t, "istio-system")
	// The first watches the pushes of the load (the real client, without
	// ztunnel's store: see connectZtunnel).
	first := connectZtunnel(t, istiod.grpcAddr, roots, tokens["ztunnel-a"], false)
	awaitReady(t, first)

	// 1. The load, with a ztunnel subscribed throughout.
	profDir := os.Getenv("SKIFF_SCALE_PROFILE")
	profCtx, stopProfile := context.WithCancel(ctx)
	var profDone <-chan struct{}
	if profDir != "" {
		profDone = istiod.profileCPU(profCtx, profDir)
	}
	cpu0 := istiod.cpu()
	start := time.Now()
	if err := cl.load(ctx, s); err != nil {
		t.Fatalf("create the cluster: %v", err)
	}
	created := time.Since(start)
	awaitFullState(t, first, s)
	converged := time.Since(start)
	cl.awaitStatuses(t, s)
	settled := time.Since(start)
	loadCPU := istiod.cpu() - cpu0
	stopProfile()
	if profDone != nil {
		<-profDone
	}
	heapProfile := ""
	if profDir != "" {
		heapProfile = filepath.Join(profDir, "heap.pprof")
	}
	mem, err := istiod.memory(ctx, heapProfile)
	if err != nil {
		t.Fatalf("istiod-lite's memory: %v", err)
	}

	// 2. The full push, to a ztunnel that connects now.
	connectAt := time.Now()
	second := connectZtunnel(t, istiod.grpcAddr, roots, tokens["ztunnel-b"], true)
	awaitReady(t, second)
	fullPushTime := time.Since(connectAt)
	full := second.firstResponses()
	if got := full[xds.AddressType].resources; got != s.addresses() {
		t.Errorf("full push: %d addresses, want %d", got, s.addresses())
	}
	if got := full[xds.AuthorizationType].resources; got != s.policies() {
		t.Errorf("full push: %d policies, want %d", got, s.policies())
	}

	// 3. Changes, each checked to reach both ztunnels as exactly what it
	// changed.
	zts := []*ztunnel{first, second}
	lat := map[string][]latency{}
	for r := range rounds {
		for k, c := range changes {
			ns := s.changeNamespace(r*len(changes) + k)
			marks := make([]int, len(zts))
			for i, z := range zts {
				marks[i] = z.mark()
			}
			at := time.Now()
			w := c.make(t, cl, ns, r)
			var l latency
			for i, z := range zts {
				recv, applied := z.awaitChange(t, marks[i], at, w)
				l.received, l.applied = max(l.received, recv), max(l.applied, applied)
			}
			l.resources = w.count()
			lat[c.name] = append(lat[c.name], l)
		}
	}
	for _, z := range zts {
		if r := z.rejections(); len(r) > 0 {
			t.Errorf("the ztunnel rejected %d responses: %s", len(r), strings.Join(r, "; "))
		}
	}

	// 4. The figures.
	var b strings.Builder
	fmt.Fprintf(&b, "istiod-lite at scale: %d namespaces, %d Services, %d pods, %d AuthorizationPolicies, %d HTTPRoutes, %d waypoints\n",
		s.namespaces, s.services(), s.pods(), s.policies(), s.routes(), s.waypoints())
	fmt.Fprintf(&b, "  load: %d objects written in %v (%d writers); a subscribed ztunnel held the whole state %v after the first write;\n",
		s.namespaces+s.waypoints()+s.services()+2*s.pods()+s.policies()+s.routes(), created.Round(time.Millisecond), writers, converged.Round(time.Millisecond))
	fmt.Fprintf(&b, "        istiod-lite had written every status %v after it; it used %v of CPU meanwhile\n", settled.Round(time.Millisecond), loadCPU.Round(10*time.Millisecond))
	fmt.Fprintf(&b, "  full push to a new ztunnel: %d addresses in %s, %d policies in %s; complete after %v\n",
		full[xds.AddressType].resources, mib(full[xds.AddressType].bytes), full[xds.AuthorizationType].resources, mib(full[xds.AuthorizationType].bytes),
		fullPushTime.Round(time.Millisecond))
	fmt.Fprintf(&b, "  change → ztunnel, from the write to the apiserver until both subscribers received it / until the second had applied it to its mesh state; median / max of %d:\n", rounds)
	for _, c := range changes {
		ls := lat[c.name]
		fmt.Fprintf(&b, "    %-34s %2d resources pushed   received %6v / %6v   applied %6v / %6v\n", c.name, ls[0].resources,
			median(ls, latency.recv), maxOf(ls, latency.recv), median(ls, latency.appl), maxOf(ls, latency.appl))
	}
	fmt.Fprintf(&b, "  istiod-lite memory after the load: heap in use %s (after a GC), RSS %s, peak RSS %s\n", mib(int(mem.heapInUse)), mib(int(mem.rss)), mib(int(mem.peakRSS)))
	t.Logf("\n%s", b.String())
}

// changeNamespace is the namespace of the i-th change: each change has its
// own (what one expects is then simple to say), spread over the cluster
// (at 1,000 namespaces, every other one has a waypoint).
func (s shape) changeNamespace(i int) int {
	return i*s.namespaces/(rounds*len(changes)) + i%2
}

// latency is one change's trip to the ztunnels (the slower of them).
type latency struct {
	received, applied time.Duration
	resources         int
}

func (l latency) recv() time.Duration { return l.received }
func (l latency) appl() time.Duration { return l.applied }

func median(ls []latency, f func(latency) time.Duration) time.Duration {
	v := make([]time.Duration, len(ls))
	for i, l := range ls {
		v[i] = f(l)
	}
	slices.Sort(v)
	return v[len(v)/2].Round(time.Millisecond)
}

func maxOf(ls []latency, f func(latency) time.Duration) time.Duration {
	var m time.Duration
	for _, l := range ls {
		m = max(m, f(l))
	}
	return m.Round(time.Millisecond)
}

func mib(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (w want) count() int {
	n := 0
	for _, names := range w {
		n += len(names.updated) + len(names.removed)
	}
	return n
}

// change is one kind of change: make writes it (in namespace ns, round r)
// and says what it must send a ztunnel.
type change struct {
	name string
	make func(t *testing.T, cl *clients, ns, r int) want
}

// podsWith returns the workload names of ns's pods with label app=app-k.
func podsWith(ns int, ks ...int) []string {
	var out []string
	for j := range podsPerNS {
		if slices.Contains(ks, j%servicesPerNS) {
			out = append(out, workloadUID(nsName(ns), podName(j)))
		}
	}
	return out
}

var changes = []change{
	{"Service port added", func(t *testing.T, cl *clients, ns, r int) want {
		ctx := context.Background()
		svcs := cl.cs.CoreV1().Services(nsName(ns))
		svc, err := svcs.Get(ctx, "svc-2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		port := int32(9000 + r)
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("extra-%d", r), Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP})
		if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The Service, and the workloads it selects (their ports).
		return want{xds.AddressType: {updated: append(podsWith(ns, 2), serviceName(nsName(ns), "svc-2"))}}
	}},
	{"AuthorizationPolicy rules changed", func(t *testing.T, cl *clients, ns, r int) want {
		var p securityv1.AuthorizationPolicy
		cl.update(t, client.ObjectKey{Namespace: nsName(ns), Name: "allow-namespace"}, &p, func() { p.Spec = allowPolicy(ns, r+1).Spec })
		return want{xds.AuthorizationType: {updated: []string{nsName(ns) + "/allow-namespace"}}}
	}},
	{"AuthorizationPolicy selector moved", func(t *testing.T, cl *clients, ns, _ int) want {
		var p securityv1.AuthorizationPolicy
		from, to := 0, 1
		cl.update(t, client.ObjectKey{Namespace: nsName(ns), Name: "deny-admin"}, &p, func() {
			if p.Spec.Selector.MatchLabels["app"] == appLabel(1) {
				from, to = 1, 0
			}
			p.Spec = denyPolicy(ns, to).Spec
		})
		// The policy itself does not change (its selector is not sent);
		// the workloads it leaves and joins list it.
		return want{xds.AddressType: {updated: podsWith(ns, from, to)}}
	}},
	{"pod deleted", func(t *testing.T, cl *clients, ns, r int) want {
		name := podName(podsPerNS - 1 - r)
		if err := cl.cs.CoreV1().Pods(nsName(ns)).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		return want{xds.AddressType: {removed: []string{workloadUID(nsName(ns), name)}}}
	}},
	{"pod relabelled", func(t *testing.T, cl *clients, ns, r int) want {
		ctx := context.Background()
		pods := cl.cs.CoreV1().Pods(nsName(ns))
		p, err := pods.Get(ctx, podName(3), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels["version"] = fmt.Sprintf("v%d", r+2)
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return want{xds.AddressType: {updated: []string{workloadUID(nsName(ns), podName(3))}}}
	}},
}

// update reads obj (a CRD kind) at key, changes it with edit and writes it.
func (cl *clients) update(t *testing.T, key client.ObjectKey, obj client.Object, edit func()) {
	t.Helper()
	ctx := context.Background()
	if err := cl.c.Get(ctx, key, obj); err != nil {
		t.Fatal(err)
	}
	edit()
	if err := cl.c.Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
}

// ztunnelToken creates ztunnel pod name on node-0 and returns a file
// holding a token bound to it.
func (cl *clients) ztunnelToken(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	p, err := cl.cs.CoreV1().Pods("istio-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: "node-0", ServiceAccountName: "ztunnel", Containers: []corev1.Container{{Name: "ztunnel", Image: "ztunnel"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cl.cs.CoreV1().ServiceAccounts("istio-system").CreateToken(ctx, "ztunnel", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences:      []string{"istio-ca"},
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// roots returns the mesh root istiod-lite publishes in ns.
func (cl *clients) roots(t *testing.T, ns string) *x509.CertPool {
	t.Helper()
	var pem string
	poll(t, "the root ConfigMap in "+ns, func() error {
		cm, err := cl.cs.CoreV1().ConfigMaps(ns).Get(context.Background(), "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pem = cm.Data["root-cert.pem"]
		return nil
	})
	certs, err := identity.ParseCertificatesPEM([]byte(pem))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// awaitStatuses waits until istiod-lite has written the status of every
// HTTPRoute and AuthorizationPolicy: it has caught up with the load.
func (cl *clients) awaitStatuses(t *testing.T, s shape) {
	t.Helper()
	poll(t, "the status of every HTTPRoute and AuthorizationPolicy", func() error {
		ctx := context.Background()
		var routes gatewayv1.HTTPRouteList
		if err := cl.c.List(ctx, &routes); err != nil {
			return err
		}
		n := 0
		for _, r := range routes.Items {
			if len(r.Status.Parents) > 0 {
				n++
			}
		}
		if n < s.routes() {
			return fmt.Errorf("%d of %d HTTPRoutes have a status", n, s.routes())
		}
		var policies securityv1.AuthorizationPolicyList
		if err := cl.c.List(ctx, &policies); err != nil {
			return err
		}
		n = 0
		for _, p := range policies.Items {
			if len(p.Status.Conditions) > 0 {
				n++
			}
		}
		if n < s.policies() {
			return fmt.Errorf("%d of %d AuthorizationPolicies have a status", n, s.policies())
		}
		return nil
	})
}

func awaitReady(t *testing.T, z *ztunnel) {
	t.Helper()
	select {
	case <-z.client.Ready():
	case <-time.After(5 * time.Minute):
		t.Fatal("the ztunnel holds no complete state after 5 minutes")
	}
}

// awaitFullState waits until z (one without a store) holds every address
// and policy of the cluster, the Services of waypoint namespaces bound to
// their waypoint.
func awaitFullState(t *testing.T, z *ztunnel, s shape) {
	t.Helper()
	poll(t, "the whole state at the ztunnel", func() error {
		if n := len(z.client.Versions(xds.AddressType)); n != s.addresses() {
			return fmt.Errorf("%d of %d addresses", n, s.addresses())
		}
		if n := len(z.client.Versions(xds.AuthorizationType)); n != s.policies() {
			return fmt.Errorf("%d of %d policies", n, s.policies())
		}
		for ns := 0; ns < s.namespaces; ns += waypointEvery {
			for k := range servicesPerNS {
				name := serviceName(nsName(ns), fmt.Sprintf("svc-%d", k))
				body, ok := z.addresses.Get(name)
				if !ok {
					return fmt.Errorf("no %s", name)
				}
				var a workloadapi.Address
				if err := body.UnmarshalTo(&a); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if a.GetService().GetWaypoint() == nil {
					return fmt.Errorf("%s has no waypoint yet", name)
				}
			}
		}
		return nil
	})
}

// poll calls check until it succeeds, for up to 10 minutes.
func poll(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}
