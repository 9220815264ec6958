package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/skiffmesh/skiff/pkg/apis"
	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
	"github.com/skiffmesh/skiff/pkg/xds"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkControlPlane measures, in one run: the time until every client
// holds the full state, the p99 time from a pod update (written to the
// apiserver) to every client holding it, istiod-lite's RSS, and CSRs signed
// per second. Sizes: SKIFF_BENCH_PODS (10000), SKIFF_BENCH_SERVICES (1000),
// SKIFF_BENCH_CLIENTS (100), SKIFF_BENCH_UPDATES (100).
func BenchmarkControlPlane(b *testing.B) {
	nPods, nSvcs := envInt("SKIFF_BENCH_PODS", 10000), envInt("SKIFF_BENCH_SERVICES", 1000)
	nClients, nUpdates := envInt("SKIFF_BENCH_CLIENTS", 100), envInt("SKIFF_BENCH_UPDATES", 100)
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); assets == "" || err != nil {
		b.Skip("KUBEBUILDER_ASSETS must hold kube-apiserver and etcd (make bench-control-plane builds them)")
	}
	ctx := context.Background()
	crds, err := apis.CRDs()
	if err != nil {
		b.Fatal(err)
	}
	env := &envtest.Environment{CRDInstallOptions: envtest.CRDInstallOptions{CRDs: crds}}
	// Room for a cluster IP per service (envtest's default range is a /24).
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	cfg.QPS, cfg.Burst = 5000, 10000
	cs := kubernetes.NewForConfigOrDie(cfg)

	// The cluster: namespaces of 100 pods and 10 services each.
	const podsPerNS = 100
	nNS := (nPods + podsPerNS - 1) / podsPerNS
	start := time.Now()
	mustCreate := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().ServiceAccounts("istio-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel"}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"}}, metav1.CreateOptions{})
	mustCreate(err)
	// One ztunnel pod per simulated client: each has its own token, as
	// real ztunnels do (istiod-lite bounds the streams of one pod).
	zts := make([]*corev1.Pod, nClients)
	for i := range zts {
		zts[i], err = cs.CoreV1().Pods("istio-system").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ztunnel-%d", i)},
			Spec:       corev1.PodSpec{NodeName: "node-0", ServiceAccountName: "ztunnel", Containers: []corev1.Container{{Name: "z", Image: "z"}}},
		}, metav1.CreateOptions{})
		mustCreate(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for ns := 0; ns < nNS; ns++ {
		nsName := fmt.Sprintf("ns-%d", ns)
		g.Go(func() error {
			if _, err := cs.CoreV1().Namespaces().Create(gctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}, metav1.CreateOptions{}); err != nil {
				return err
			}
			if _, err := cs.CoreV1().ServiceAccounts(nsName).Create(gctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
				return err
			}
			return nil
		})
	}
	mustCreate(g.Wait())
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := 0; i < nSvcs; i++ {
		ns := fmt.Sprintf("ns-%d", i%nNS)
		g.Go(func() error {
			_, err := cs.CoreV1().Services(ns).Create(gctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
				Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i/nNS)}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intOrStr(8080)}}},
			}, metav1.CreateOptions{})
			return err
		})
	}
	for i := 0; i < nPods; i++ {
		ns := fmt.Sprintf("ns-%d", i/podsPerNS)
		g.Go(func() error {
			p, err := cs.CoreV1().Pods(ns).Create(gctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", (i%podsPerNS)%(nSvcs/nNS+1))},
					Annotations: map[string]string{"ambient.istio.io/redirection": "enabled"}},
				Spec: corev1.PodSpec{NodeName: "node-0", ServiceAccountName: "app", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			ip := fmt.Sprintf("10.%d.%d.%d", 64+i/65536, (i/256)%256, i%256)
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
			_, err = cs.CoreV1().Pods(ns).UpdateStatus(gctx, p, metav1.UpdateOptions{})
			return err
		})
	}
	mustCreate(g.Wait())
	b.Logf("cluster: %d namespaces, %d services, %d pods created in %v", nNS, nSvcs, nPods, time.Since(start).Round(time.Millisecond))

	// istiod-lite, as its own process.
	dir := b.TempDir()
	bin := filepath.Join(dir, "istiod-lite")
	build := exec.Command("go", "build", "-o", bin, "github.com/skiffmesh/skiff/istiod-lite")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	mustCreate(build.Run())
	user, err := env.AddUser(envtest.User{Name: "istiod", Groups: []string{"system:masters"}}, nil)
	mustCreate(err)
	kc, err := user.KubeConfig()
	mustCreate(err)
	kcPath := filepath.Join(dir, "kubeconfig")
	mustCreate(os.WriteFile(kcPath, kc, 0o600))
	grpcAddr, httpAddr := freeAddr(b), freeAddr(b)
	cmd := exec.Command(bin, "--kubeconfig="+kcPath, "--leader-elect=false", "--grpc-addr="+grpcAddr, "--http-addr="+httpAddr,
		"--dns-names="+caclient.DefaultServerName, "--log-level=warn", "--profiling")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	started := time.Now()
	mustCreate(cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
	}()
	for {
		select {
		case err := <-exited:
			b.Fatalf("istiod-lite exited: %v", err)
		default:
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Logf("istiod-lite ready (cache synced, index built) %v after start", time.Since(started).Round(time.Millisecond))

	cm, err := cs.CoreV1().ConfigMaps("ns-0").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
	for err != nil {
		time.Sleep(20 * time.Millisecond)
		cm, err = cs.CoreV1().ConfigMaps("ns-0").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
	}
	rootCerts, err := identity.ParseCertificatesPEM([]byte(cm.Data["root-cert.pem"]))
	mustCreate(err)
	roots := x509.NewCertPool()
	for _, c := range rootCerts {
		roots.AddCert(c)
	}
	tokenFiles := make([]string, nClients)
	for i, zt := range zts {
		tr, err := cs.CoreV1().ServiceAccounts("istio-system").CreateToken(ctx, "ztunnel", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{"istio-ca"}, BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: zt.Name, UID: zt.UID},
		}}, metav1.CreateOptions{})
		mustCreate(err)
		tokenFiles[i] = filepath.Join(dir, fmt.Sprintf("token-%d", i))
		mustCreate(os.WriteFile(tokenFiles[i], []byte(tr.Status.Token), 0o600))
	}
	tokenFile := tokenFiles[0]

	// 1. Full state to every client.
	want := nPods + nSvcs + 1 // + the apiserver's own Service
	// Each simulated ztunnel keeps the full state (the xds.Client does) and
	// notes when single-resource updates arrive.
	type seen struct {
		mu sync.Mutex
		at map[string]time.Time // name → arrival of its latest small update
	}
	// connectAll connects nClients simulated ztunnels at once and returns
	// when all hold the full state: how long that took, and the CPU spent
	// by istiod-lite and by the clients meanwhile.
	type round struct {
		clients            []*seen
		cancel             context.CancelFunc
		wait               func()
		took               time.Duration
		istiodCPU, selfCPU time.Duration
	}
	connectAll := func() *round {
		r := &round{clients: make([]*seen, nClients)}
		var full, runs sync.WaitGroup
		full.Add(nClients)
		cctx, cancel := context.WithCancel(ctx)
		r.cancel, r.wait = cancel, runs.Wait
		t0 := time.Now()
		cpu0, selfCPU0 := procCPU(cmd.Process.Pid), procCPU(os.Getpid())
		var fullAt atomic.Int64
		for i := range r.clients {
			s := &seen{at: map[string]time.Time{}}
			r.clients[i] = s
			var got atomic.Int64
			var once sync.Once
			xc, err := xds.NewClient(xds.ClientOptions{
				Address: grpcAddr, Roots: roots, TokenFile: tokenFiles[i], Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Subscriptions: []xds.Subscription{{TypeURL: xds.AddressType, Apply: func(d xds.Delta) error {
					now := time.Now()
					if len(d.Updated) <= 10 {
						s.mu.Lock()
						for _, r := range d.Updated {
							s.at[r.Name] = now
						}
						s.mu.Unlock()
					}
					if got.Add(int64(len(d.Updated))) >= int64(want) {
						once.Do(func() {
							for {
								old := fullAt.Load()
								if int64(now.Sub(t0)) <= old || fullAt.CompareAndSwap(old, int64(now.Sub(t0))) {
									break
								}
							}
							full.Done()
						})
					}
					return nil
				}}},
			})
			mustCreate(err)
			runs.Add(1)
			go func() { defer runs.Done(); _ = xc.Run(cctx) }()
		}
		full.Wait()
		r.took = time.Duration(fullAt.Load())
		r.istiodCPU, r.selfCPU = procCPU(cmd.Process.Pid)-cpu0, procCPU(os.Getpid())-selfCPU0
		return r
	}
	// Three rounds (the machine is shared; the median is steadier than one
	// sample); the clients of the last stay connected for the next steps.
	var rounds []*round
	for i := 0; i < 3; i++ {
		if i > 0 {
			rounds[i-1].cancel()
			rounds[i-1].wait()
		}
		rounds = append(rounds, connectAll())
	}
	last := rounds[len(rounds)-1]
	defer func() { last.cancel(); last.wait() }()
	clients := last.clients
	byTime := slices.Clone(rounds)
	slices.SortFunc(byTime, func(a, b *round) int { return int(a.took - b.took) })
	med := byTime[1]
	fullState, istiodCPU, clientsCPU := med.took, med.istiodCPU, med.selfCPU
	var samples []string
	for _, r := range rounds {
		samples = append(samples, r.took.Round(time.Millisecond).String())
	}
	rss, hwm := procRSS(cmd.Process.Pid)
	if path := os.Getenv("SKIFF_BENCH_HEAP_PROFILE"); path != "" {
		if resp, err := http.Get("http://" + httpAddr + "/debug/pprof/heap"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = os.WriteFile(path, data, 0o644)
		}
	}

	// 2. Update propagation: relabel pods one at a time and wait for every
	// client to hold the new version.
	var lat []time.Duration
	for u := 0; u < nUpdates; u++ {
		ns, name := fmt.Sprintf("ns-%d", u%nNS), fmt.Sprintf("pod-%d", (u%nNS)*podsPerNS)
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		mustCreate(err)
		p.Labels["version"] = "v" + strconv.Itoa(u)
		uStart := time.Now()
		_, err = cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{})
		mustCreate(err)
		key := "Kubernetes//Pod/" + ns + "/" + name
		var worst time.Duration
		for _, s := range clients {
			for {
				s.mu.Lock()
				at := s.at[key]
				s.mu.Unlock()
				if at.After(uStart) {
					worst = max(worst, at.Sub(uStart))
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		lat = append(lat, worst)
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]

	// 3. CSRs per second: a ztunnel asking for the identities of pods on its node.
	// A raw client: the load generator shares the machine with istiod-lite,
	// so it does not parse the returned chains.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: caclient.DefaultServerName})),
		grpc.WithPerRPCCredentials(caclient.TokenFile(tokenFile)))
	mustCreate(err)
	defer conn.Close()
	caC := caapi.NewIstioCertificateServiceClient(conn)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	var reqs []*caapi.IstioCertificateRequest
	for i := 0; i < 64; i++ {
		id, _ := identity.WorkloadID(td, fmt.Sprintf("ns-%d", i%nNS), "app")
		key, _ := identity.GenerateKey()
		csr, _ := identity.NewCSR(key, id)
		reqs = append(reqs, &caapi.IstioCertificateRequest{Csr: string(csr), ValidityDuration: 3600,
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{caclient.ImpersonatedIdentityKey: structpb.NewStringValue(id.String())}}})
	}
	var signed, failed atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	csrEnd := time.Now().Add(5 * time.Second)
	csrCtx, csrCancel := context.WithDeadline(ctx, csrEnd.Add(time.Second))
	var wg sync.WaitGroup
	csrStart := time.Now()
	for w := 0; w < 64; w++ {
		wg.Go(func() {
			// gRPC fails a call whose deadline has passed by the clock, which
			// under load can precede ctx's own timer: compare with the clock.
			for i := w; time.Now().Before(csrEnd); i++ {
				if _, err := caC.CreateCertificate(csrCtx, reqs[i%len(reqs)]); err == nil {
					signed.Add(1)
				} else if time.Now().Before(csrEnd) {
					failed.Add(1)
					errMu.Lock()
					errs[status.Code(err).String()+": "+status.Convert(err).Message()]++
					errMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	csrCancel()
	csrRate := float64(signed.Load()) / time.Since(csrStart).Seconds()
	_, hwmAfter := procRSS(cmd.Process.Pid)

	b.ReportMetric(fullState.Seconds(), "full-state-s")
	b.ReportMetric(float64(p99.Milliseconds()), "update-p99-ms")
	b.ReportMetric(float64(hwmAfter)/(1<<20), "peak-rss-MB")
	b.ReportMetric(csrRate, "csr/s")
	fmt.Printf("\ncontrol plane: %d pods, %d services, %d ztunnel clients (%d resources each)\n", nPods, nSvcs, nClients, want)
	fmt.Printf("  %-38s %10s %10s %8s\n", "measure", "skiff", "target", "ratio")
	row := func(name string, v, target float64, unit string, lowerBetter bool) {
		ratio := v / target
		if !lowerBetter {
			ratio = target / v
		}
		fmt.Printf("  %-38s %9.3g%s %9.3g%s %7.2fx\n", name, v, unit, target, unit, ratio)
	}
	row("full state to all clients (median of 3)", fullState.Seconds(), 2, "s", true)
	fmt.Printf("    (rounds %s; CPU in the median round: istiod-lite %.2fs, the %d simulated clients %.2fs)\n", strings.Join(samples, ", "), istiodCPU.Seconds(), nClients, clientsCPU.Seconds())
	row(fmt.Sprintf("update to all clients, p99 (p50 %v)", p50.Round(time.Millisecond)), float64(p99.Milliseconds()), 200, "ms", true)
	row("istiod-lite RSS after full push", float64(rss)/(1<<20), 300, "M", true)
	row("istiod-lite peak RSS (whole run)", float64(max(hwm, hwmAfter))/(1<<20), 300, "M", true)
	row("CSRs signed per second", csrRate, 2000, "/s", false)
	fmt.Printf("  (ratio = skiff / target for times and memory, target / skiff for throughput: <= 1 meets the target)\n")
	for msg, n := range errs {
		fmt.Printf("  %d CSRs refused: %s\n", n, msg)
	}
}

func intOrStr(v int32) intstr.IntOrString { return intstr.FromInt32(v) }

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// procCPU returns a process's user+system CPU time so far.
func procCPU(pid int) time.Duration { return benchpeer.CPUTime([]int{pid}) }

// procRSS returns a process's resident and peak resident set sizes in bytes.
func procRSS(pid int) (rss, hwm int64) {
	rss, _ = benchpeer.RSS(pid)
	hwm, _ = benchpeer.PeakRSS(pid)
	return rss, hwm
}
