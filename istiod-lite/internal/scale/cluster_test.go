package scale

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/apis/apistest"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

// The cluster's shape per namespace: at 1,000 namespaces, 5,000 Services,
// 20,000 pods, 2,000 AuthorizationPolicies and 1,000 HTTPRoutes. Every
// waypointEvery-th namespace has a waypoint that its Services use, so that
// the HTTPRoutes (attached to Services, GAMMA) are translated for real.
const (
	defaultNamespaces = 1000
	// shortNamespaces is the size under go test -short.
	shortNamespaces = 100
	servicesPerNS   = 5
	podsPerNS       = 20
	nodes           = 10
	waypointEvery   = 10
	// writers bounds the requests in flight while the cluster is created.
	writers = 32
)

// shape is the size of the cluster.
type shape struct{ namespaces int }

func shapeFromEnv(t *testing.T) shape {
	t.Helper()
	s := shape{namespaces: defaultNamespaces}
	if testing.Short() {
		s.namespaces = shortNamespaces
	}
	if v := os.Getenv("SKIFF_SCALE_NAMESPACES"); v != "" {
		n, err := strconv.Atoi(v)
		// At least two per change, so that each has its own namespace
		// (changeNamespace).
		if least := 2 * rounds * len(changes); err != nil || n < least {
			t.Fatalf("SKIFF_SCALE_NAMESPACES=%q: want a number of namespaces, at least %d", v, least)
		}
		s.namespaces = n
	}
	return s
}

func (s shape) services() int  { return s.namespaces * servicesPerNS }
func (s shape) pods() int      { return s.namespaces * podsPerNS }
func (s shape) policies() int  { return s.namespaces * 2 }
func (s shape) routes() int    { return s.namespaces }
func (s shape) waypoints() int { return (s.namespaces + waypointEvery - 1) / waypointEvery }

// addresses is the number of Address resources a ztunnel receives: every
// pod, every Service, each waypoint's Service, and the apiserver's own.
func (s shape) addresses() int { return s.pods() + s.services() + s.waypoints() + 1 }

func nsName(i int) string               { return fmt.Sprintf("scale-%04d", i) }
func hasWaypoint(ns int) bool           { return ns%waypointEvery == 0 }
func podName(j int) string              { return fmt.Sprintf("pod-%02d", j) }
func appLabel(j int) string             { return fmt.Sprintf("app-%d", j%servicesPerNS) }
func workloadUID(ns, pod string) string { return "Kubernetes//Pod/" + ns + "/" + pod }
func serviceName(ns, svc string) string {
	return ns + "/" + svc + "." + ns + ".svc.cluster.local"
}

// podIP is pod j of namespace ns's address, unique in the cluster.
func podIP(ns, j int) string {
	i := ns*podsPerNS + j
	return fmt.Sprintf("10.%d.%d.%d", 64+i/65536, (i/256)%256, i%256)
}

// clients writes to the apiserver: core kinds in protobuf, Skiff's and
// Gateway API's kinds (CRDs, JSON only) with controller-runtime's client.
type clients struct {
	cs *kubernetes.Clientset
	c  client.Client
}

func newClients(t *testing.T, cfg *rest.Config) *clients {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 5000, 10000
	pb := rest.CopyConfig(cfg)
	pb.ContentType = "application/vnd.kubernetes.protobuf"
	pb.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return &clients{cs: kubernetes.NewForConfigOrDie(pb), c: apistest.Client(t, cfg)}
}

// load creates the cluster: namespaces first, then everything in them,
// writers requests at a time.
func (cl *clients) load(ctx context.Context, s shape) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(writers)
	for ns := range s.namespaces {
		g.Go(func() error { return cl.createNamespace(gctx, ns) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(writers)
	// Namespace by namespace, so that the cluster grows as a real one does
	// rather than kind by kind.
	for ns := range s.namespaces {
		if hasWaypoint(ns) {
			g.Go(func() error { return cl.createWaypoint(gctx, ns) })
		}
		for k := range servicesPerNS {
			g.Go(func() error { return cl.createService(gctx, ns, k) })
		}
		for j := range podsPerNS {
			g.Go(func() error { return cl.createPod(gctx, ns, j) })
		}
		g.Go(func() error { return cl.createPolicies(gctx, ns) })
		g.Go(func() error { return cl.createRoute(gctx, ns) })
	}
	return g.Wait()
}

func (cl *clients) createNamespace(ctx context.Context, ns int) error {
	labels := map[string]string{index.LabelDataplaneMode: index.DataplaneAmbient}
	if hasWaypoint(ns) {
		labels[index.LabelUseWaypoint] = "waypoint"
	}
	_, err := cl.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(ns), Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("namespace %s: %w", nsName(ns), err)
	}
	return nil
}

func (cl *clients) createWaypoint(ctx context.Context, ns int) error {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: "waypoint", Labels: map[string]string{index.LabelWaypointFor: index.WaypointForService}},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: index.WaypointClass,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: index.HBONEPort, Protocol: "HBONE"}},
		},
	}
	if err := cl.c.Create(ctx, gw); err != nil {
		return fmt.Errorf("gateway %s/waypoint: %w", nsName(ns), err)
	}
	return nil
}

func (cl *clients) createService(ctx context.Context, ns, k int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: fmt.Sprintf("svc-%d", k)},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": appLabel(k)},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := cl.cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

// createPod creates pod j of ns, then gives it an address and marks it
// ready, as the kubelet would, and redirected to ztunnel, as the node agent
// would.
func (cl *clients) createPod(ctx context.Context, ns, j int) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: podName(j),
			Labels:      map[string]string{"app": appLabel(j)},
			Annotations: map[string]string{index.AnnotationRedirection: index.RedirectionEnabled}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", (ns*podsPerNS+j)%nodes), ServiceAccountName: appLabel(j),
			Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}
	pods := cl.cs.CoreV1().Pods(p.Namespace)
	p, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", nsName(ns), podName(j), err)
	}
	ip := podIP(ns, j)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// createPolicies creates a namespace's two policies: an ALLOW for the
// namespace, and a DENY by selector.
func (cl *clients) createPolicies(ctx context.Context, ns int) error {
	for _, p := range []*securityv1.AuthorizationPolicy{allowPolicy(ns, 0), denyPolicy(ns, 0)} {
		if err := cl.c.Create(ctx, p); err != nil {
			return fmt.Errorf("authorizationpolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}

// allowPolicy admits the namespace's own clients and version more others.
func allowPolicy(ns, version int) *securityv1.AuthorizationPolicy {
	from := []string{nsName(ns), "istio-system"}
	for v := range version {
		from = append(from, fmt.Sprintf("extra-%d", v))
	}
	return &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: "allow-namespace"},
		Spec: securityv1.AuthorizationPolicySpec{
			Action: securityv1.ActionAllow,
			Rules:  []securityv1.Rule{{From: []securityv1.RuleFrom{{Source: &securityv1.Source{Namespaces: from}}}}},
		},
	}
}

// denyPolicy denies port 9999 to the pods with label app=appLabel(k).
func denyPolicy(ns, k int) *securityv1.AuthorizationPolicy {
	return &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: "deny-admin"},
		Spec: securityv1.AuthorizationPolicySpec{
			Action:   securityv1.ActionDeny,
			Selector: &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": appLabel(k)}},
			Rules:    []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Ports: []string{"9999"}}}}}},
		},
	}
}

// createRoute attaches an HTTPRoute to svc-0 (GAMMA): /v2 goes to svc-1,
// the rest is split 90/10 between svc-0 and svc-1.
func (cl *clients) createRoute(ctx context.Context, ns int) error {
	backend := func(svc string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc), Port: ptr.To(gatewayv1.PortNumber(80))},
			Weight:                 ptr.To(weight),
		}}
	}
	r := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName(ns), Name: "svc-0"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "svc-0", Port: ptr.To(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{
				{
					Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/v2")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("svc-1", 1)},
				},
				{BackendRefs: []gatewayv1.HTTPBackendRef{backend("svc-0", 90), backend("svc-1", 10)}},
			},
		},
	}
	if err := cl.c.Create(ctx, r); err != nil {
		return fmt.Errorf("httproute %s/%s: %w", r.Namespace, r.Name, err)
	}
	return nil
}
