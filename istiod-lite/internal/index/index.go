package index

import (
	"context"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// Resource is one built xDS resource.
type Resource struct {
	Name    string
	Version string
	Message proto.Message
	// Bytes is Message's deterministic encoding.
	Bytes []byte
}

// Update is what changed for one resource type in one flush.
type Update struct {
	TypeURL  string
	Upserted []Resource
	Removed  []string
}

// Sink receives the changes of each flush, in order. It must not block long:
// the index is locked while it runs.
type Sink interface {
	Push(updates []Update)
}

// Options configures New.
type Options struct {
	// TrustDomain of workload identities (default cluster.local).
	TrustDomain string
	// DomainSuffix of service hostnames (default cluster.local).
	DomainSuffix string
	// ClusterID names the cluster in workload uids (default Kubernetes).
	ClusterID string
	// Network of all workloads (default "", the default network).
	Network string
	// RootNamespace holds mesh-wide policies (default istio-system).
	RootNamespace string
	// Debounce is the quiet period after a change before a flush; MaxDelay
	// bounds how long a flush waits under constant change.
	Debounce, MaxDelay time.Duration
	Logger             *slog.Logger
}

// Index is the mesh model. It is safe for concurrent use.
type Index struct {
	opts Options
	log  *slog.Logger

	mu         sync.Mutex
	namespaces map[string]*namespaceInfo
	pods       map[key]*podInfo
	podsByNS   map[string]map[key]bool
	services   map[key]*serviceInfo
	svcByNS    map[string]map[key]bool
	slices     map[key]*sliceInfo
	// sliceSvcByPod: pod → selector-less service keys → slice keys naming it.
	sliceSvcByPod map[key]map[key]map[key]bool
	// slicesBySvc: service → its slices' keys.
	slicesBySvc map[key]map[key]bool
	gateways    map[key]*gatewayInfo
	authz       map[key]*securityv1.AuthorizationPolicy
	authzByNS   map[string]map[key]*securityv1.AuthorizationPolicy
	httpRoutes  map[key]*gatewayv1.HTTPRoute
	grpcRoutes  map[key]*gatewayv1.GRPCRoute
	rateLimits  map[key]*policyv1alpha1.RateLimitPolicy
	// nodeSAs counts running pods per node and "<ns>/<sa>" (for the CA).
	nodeSAs map[string]map[key]int
	podNode map[key]nodeSA

	dirtyPods, dirtySvcs, dirtyAuthz map[key]bool
	dirtyWaypoints                   bool

	// published is what the sink last received, per type and name.
	published map[string]map[string]string
	sink      Sink
	changed   chan struct{}
}

type nodeSA struct{ node, sa key }

// New returns an empty index that publishes to sink.
func New(opts Options, sink Sink) *Index {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = "cluster.local"
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "Kubernetes"
	}
	if opts.RootNamespace == "" {
		opts.RootNamespace = "istio-system"
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = max(100*time.Millisecond, opts.Debounce)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Index{
		opts: opts, log: opts.Logger, sink: sink,
		namespaces: map[string]*namespaceInfo{}, pods: map[key]*podInfo{}, podsByNS: map[string]map[key]bool{},
		services: map[key]*serviceInfo{}, svcByNS: map[string]map[key]bool{},
		slices: map[key]*sliceInfo{}, sliceSvcByPod: map[key]map[key]map[key]bool{}, slicesBySvc: map[key]map[key]bool{},
		gateways: map[key]*gatewayInfo{}, authz: map[key]*securityv1.AuthorizationPolicy{},
		authzByNS:  map[string]map[key]*securityv1.AuthorizationPolicy{},
		httpRoutes: map[key]*gatewayv1.HTTPRoute{}, grpcRoutes: map[key]*gatewayv1.GRPCRoute{},
		rateLimits: map[key]*policyv1alpha1.RateLimitPolicy{},
		nodeSAs:    map[string]map[key]int{}, podNode: map[key]nodeSA{},
		dirtyPods: map[key]bool{}, dirtySvcs: map[key]bool{}, dirtyAuthz: map[key]bool{},
		published: map[string]map[string]string{xds.AddressType: {}, xds.AuthorizationType: {}, xds.WaypointType: {}},
		changed:   make(chan struct{}, 1),
	}
}

func (ix *Index) notify() {
	select {
	case ix.changed <- struct{}{}:
	default:
	}
}

// Run flushes after changes settle until ctx is done.
func (ix *Index) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ix.changed:
		}
		deadline := time.NewTimer(ix.opts.MaxDelay)
		quiet := time.NewTimer(ix.opts.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				deadline.Stop()
				quiet.Stop()
				return
			case <-ix.changed:
				quiet.Reset(ix.opts.Debounce)
			case <-quiet.C:
				break wait
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
		quiet.Stop()
		ix.Flush()
	}
}

// --- inputs -----------------------------------------------------------------

// SetNamespace records a namespace, or forgets it when ns is nil.
func (ix *Index) SetNamespace(name string, ns *corev1.Namespace) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.namespaces[name]
	if ns == nil {
		delete(ix.namespaces, name)
	} else {
		ix.namespaces[name] = &namespaceInfo{labels: ns.Labels}
		if old != nil && labelEq(old.labels, ns.Labels, LabelDataplaneMode, LabelUseWaypoint, LabelUseWaypointNS) {
			return
		}
	}
	for k := range ix.podsByNS[name] {
		ix.dirtyPods[k] = true
	}
	for k := range ix.svcByNS[name] {
		ix.dirtySvcs[k] = true
	}
	ix.dirtyWaypoints = true
	ix.notify()
}

func labelEq(a, b map[string]string, keys ...string) bool {
	for _, k := range keys {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

// SetPod records a pod, or forgets it when pod is nil.
func (ix *Index) SetPod(ns, name string, pod *corev1.Pod) {
	k := keyOf(ns, name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var pi *podInfo
	if pod != nil {
		pi = podFrom(pod)
	}
	ix.trackNode(k, pod)
	old := ix.pods[k]
	if pi == nil {
		if old == nil {
			return
		}
		delete(ix.pods, k)
		delete(ix.podsByNS[ns], k)
	} else {
		if old != nil && old.equal(pi) {
			// Nothing its workload is built from changed: a status
			// write, or the informer feeding it again.
			ix.pods[k] = pi
			return
		}
		ix.pods[k] = pi
		if ix.podsByNS[ns] == nil {
			ix.podsByNS[ns] = map[key]bool{}
		}
		ix.podsByNS[ns][k] = true
	}
	ix.dirtyPods[k] = true
	ix.notify()
}

// trackNode maintains nodeSAs for pods that run (or will run) on a node.
func (ix *Index) trackNode(k key, pod *corev1.Pod) {
	if old, ok := ix.podNode[k]; ok {
		if m := ix.nodeSAs[old.node]; m != nil {
			if m[old.sa]--; m[old.sa] <= 0 {
				delete(m, old.sa)
			}
			if len(m) == 0 {
				delete(ix.nodeSAs, old.node)
			}
		}
		delete(ix.podNode, k)
	}
	if pod == nil || pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = defaultServiceAccount
	}
	n := nodeSA{node: pod.Spec.NodeName, sa: keyOf(pod.Namespace, sa)}
	ix.podNode[k] = n
	if ix.nodeSAs[n.node] == nil {
		ix.nodeSAs[n.node] = map[key]int{}
	}
	ix.nodeSAs[n.node][n.sa]++
}

// HasServiceAccountOnNode reports whether a pod running as namespace/sa is
// scheduled on node.
func (ix *Index) HasServiceAccountOnNode(node, namespace, sa string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.nodeSAs[node][keyOf(namespace, sa)] > 0
}

// SetService records a service, or forgets it when svc is nil.
func (ix *Index) SetService(ns, name string, svc *corev1.Service) {
	k := keyOf(ns, name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.services[k]
	if svc == nil {
		delete(ix.services, k)
		delete(ix.svcByNS[ns], k)
	} else {
		si := serviceFrom(svc)
		if old != nil && old.equal(si) {
			ix.services[k] = si
			return
		}
		ix.services[k] = si
		if ix.svcByNS[ns] == nil {
			ix.svcByNS[ns] = map[key]bool{}
		}
		ix.svcByNS[ns][k] = true
	}
	// Pods selected before or after may change their services map.
	var selectors []map[string]string
	if old != nil {
		selectors = append(selectors, old.selector)
	}
	if s := ix.services[k]; s != nil {
		selectors = append(selectors, s.selector)
	}
	for pk := range ix.podsByNS[ns] {
		for _, sel := range selectors {
			if selects(sel, ix.pods[pk].labels) {
				ix.dirtyPods[pk] = true
			}
		}
	}
	// Pods named by the slices of a selector-less service (before or after).
	if old == nil || len(old.selector) == 0 || svc == nil || len(svc.Spec.Selector) == 0 {
		for sk := range ix.slicesBySvc[k] {
			for _, pk := range ix.slices[sk].pods {
				ix.dirtyPods[pk] = true
			}
		}
	}
	ix.dirtySvcs[k] = true
	// Waypoints hold the services bound to them, and whether a service
	// exists decides whether a route may mirror to it.
	now := ix.services[k]
	bound := (old != nil && ix.boundGateway(ns, old.labels) != "") || (now != nil && ix.boundGateway(ns, now.labels) != "")
	if bound || ((old == nil) != (now == nil) && ix.mirrored(k)) {
		ix.dirtyWaypoints = true
	}
	ix.notify()
}

// SetEndpointSlice records an EndpointSlice, or forgets it when s is nil.
// Only slices of selector-less services change workloads (the others follow
// the service's selector), so only those mark their pods dirty; all are
// kept, in case a service loses its selector.
func (ix *Index) SetEndpointSlice(ns, name string, s *discoveryv1.EndpointSlice) {
	k := keyOf(ns, name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	matters := func(svc key) bool {
		si := ix.services[svc]
		return si == nil || len(si.selector) == 0
	}
	if old := ix.slices[k]; old != nil {
		svc := keyOf(old.ns, old.service)
		delete(ix.slicesBySvc[svc], k)
		if len(ix.slicesBySvc[svc]) == 0 {
			delete(ix.slicesBySvc, svc)
		}
		dirty := matters(svc)
		for _, pk := range old.pods {
			if m := ix.sliceSvcByPod[pk]; m != nil {
				delete(m[svc], k)
				if len(m[svc]) == 0 {
					delete(m, svc)
				}
				if len(m) == 0 {
					delete(ix.sliceSvcByPod, pk)
				}
			}
			if dirty {
				ix.dirtyPods[pk] = true
			}
		}
		delete(ix.slices, k)
	}
	var si *sliceInfo
	if s != nil {
		si = sliceFrom(s)
	}
	if si != nil {
		ix.slices[k] = si
		svc := keyOf(si.ns, si.service)
		if ix.slicesBySvc[svc] == nil {
			ix.slicesBySvc[svc] = map[key]bool{}
		}
		ix.slicesBySvc[svc][k] = true
		dirty := matters(svc)
		for _, pk := range si.pods {
			m := ix.sliceSvcByPod[pk]
			if m == nil {
				m = map[key]map[key]bool{}
				ix.sliceSvcByPod[pk] = m
			}
			if m[svc] == nil {
				m[svc] = map[key]bool{}
			}
			m[svc][k] = true
			if dirty {
				ix.dirtyPods[pk] = true
			}
		}
	}
	ix.notify()
}

// SetGateway records a Gateway, or forgets it when g is nil. Only waypoints
// (class istio-waypoint) are kept.
func (ix *Index) SetGateway(ns, name string, g *gatewayv1.Gateway) {
	k := keyOf(ns, name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var gi *gatewayInfo
	if g != nil {
		gi = gatewayFrom(g)
	}
	old := ix.gateways[k]
	if gi == nil {
		if old == nil {
			return
		}
		delete(ix.gateways, k)
	} else {
		ix.gateways[k] = gi
		if old != nil && old.equal(gi) {
			return // a status write that changed no address
		}
	}
	// Whatever is bound to the waypoint may be in any namespace that names
	// it: re-check everything bound to it (and nothing bound to another).
	for pk, p := range ix.pods {
		if ix.boundGateway(p.ns, p.labels) == k {
			ix.dirtyPods[pk] = true
		}
	}
	for sk, s := range ix.services {
		if ix.boundGateway(s.ns, s.labels) == k {
			ix.dirtySvcs[sk] = true
		}
	}
	ix.dirtyWaypoints = true
	ix.notify()
}

func (ix *Index) nsLabel(ns, label string) string {
	if n := ix.namespaces[ns]; n != nil {
		return n.labels[label]
	}
	return ""
}

// SetAuthorizationPolicy records a policy, or forgets it when p is nil.
func (ix *Index) SetAuthorizationPolicy(ns, name string, p *securityv1.AuthorizationPolicy) {
	k := keyOf(ns, name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.authz[k]
	if old != nil && p != nil && sameGeneration(old, p) {
		// Only its status or metadata changed, which nothing reads.
		ix.authz[k] = p
		ix.authzByNS[ns][k] = p
		return
	}
	if p == nil {
		delete(ix.authz, k)
		delete(ix.authzByNS[ns], k)
	} else {
		ix.authz[k] = p
		if ix.authzByNS[ns] == nil {
			ix.authzByNS[ns] = map[key]*securityv1.AuthorizationPolicy{}
		}
		ix.authzByNS[ns][k] = p
	}
	// Workloads list the selector policies that apply to them: those its
	// selector matched before or matches now may change.
	if before, after := selectorOf(old), selectorOf(p); before != nil || after != nil {
		matches := func(pk key) {
			if l := ix.pods[pk].labels; selects(before, l) || selects(after, l) {
				ix.dirtyPods[pk] = true
			}
		}
		if ns == ix.opts.RootNamespace {
			for pk := range ix.pods {
				matches(pk)
			}
		} else {
			for pk := range ix.podsByNS[ns] {
				matches(pk)
			}
		}
	}
	ix.dirtyAuthz[k] = true
	// Waypoints hold the policies that target something (L7); the others
	// are ztunnel's.
	if (old != nil && hasTargets(old)) || (p != nil && hasTargets(p)) {
		ix.dirtyWaypoints = true
	}
	ix.notify()
}

// sameGeneration reports whether b is the same object as a with the same
// spec: the generation changes with every change of the spec (and, for a
// kind without a status subresource, of the status), never with metadata.
// Objects without a uid and generation (made by hand, not read from the
// apiserver) are never the same.
func sameGeneration(a, b metav1.Object) bool {
	return a.GetUID() != "" && a.GetUID() == b.GetUID() && a.GetGeneration() != 0 && a.GetGeneration() == b.GetGeneration()
}

// selectorOf returns a ztunnel policy's selector labels, nil if it has none.
func selectorOf(p *securityv1.AuthorizationPolicy) map[string]string {
	if p == nil || p.Spec.Selector == nil || len(p.Spec.Selector.MatchLabels) == 0 || hasTargets(p) {
		return nil
	}
	return p.Spec.Selector.MatchLabels
}

func hasTargets(p *securityv1.AuthorizationPolicy) bool {
	return len(p.Spec.TargetRefs) > 0 || p.Spec.TargetRef != nil
}

// SetHTTPRoute records an HTTPRoute, or forgets it when r is nil.
func (ix *Index) SetHTTPRoute(ns, name string, r *gatewayv1.HTTPRoute) {
	setL7(ix, ix.httpRoutes, keyOf(ns, name), r, func(r *gatewayv1.HTTPRoute) bool {
		return ix.attachedToWaypoint(r.Spec.ParentRefs, r.Namespace)
	})
}

// SetGRPCRoute records a GRPCRoute, or forgets it when r is nil.
func (ix *Index) SetGRPCRoute(ns, name string, r *gatewayv1.GRPCRoute) {
	setL7(ix, ix.grpcRoutes, keyOf(ns, name), r, func(r *gatewayv1.GRPCRoute) bool {
		return ix.attachedToWaypoint(r.Spec.ParentRefs, r.Namespace)
	})
}

// SetRateLimitPolicy records a RateLimitPolicy, or forgets it when p is nil.
func (ix *Index) SetRateLimitPolicy(ns, name string, p *policyv1alpha1.RateLimitPolicy) {
	setL7(ix, ix.rateLimits, keyOf(ns, name), p, nil)
}

// setL7 records v (or forgets it, when nil) under k in m. The waypoints
// are rebuilt if seen reports that one of them reads the old or the new
// value (always, when seen is nil).
func setL7[T any](ix *Index, m map[key]*T, k key, v *T, seen func(*T) bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := m[k]
	if old != nil && v != nil {
		o, ook := any(old).(metav1.Object)
		n, nok := any(v).(metav1.Object)
		if ook && nok && sameGeneration(o, n) {
			m[k] = v // only its status or metadata changed
			return
		}
	}
	if v == nil {
		if old == nil {
			return
		}
		delete(m, k)
	} else {
		m[k] = v
	}
	if seen == nil || (old != nil && seen(old)) || (v != nil && seen(v)) {
		ix.dirtyWaypoints = true
		ix.notify()
	}
}

// attachedToWaypoint reports whether a route in routeNS with parentRefs
// refs attaches to a Service bound to a waypoint: only those waypoints
// read it. (A Service bound later rebuilds the waypoints then.)
func (ix *Index) attachedToWaypoint(refs []gatewayv1.ParentReference, routeNS string) bool {
	for _, sk := range serviceParents(refs, routeNS) {
		if s := ix.services[sk]; s != nil && ix.boundGateway(s.ns, s.labels) != "" {
			return true
		}
	}
	return false
}

// mirrored reports whether a route mirrors requests to Service k, which a
// waypoint does only while k exists.
func (ix *Index) mirrored(k key) bool {
	for _, r := range ix.httpRoutes {
		for _, rule := range r.Spec.Rules {
			if mirrorsTo(rule.Filters, r.Namespace, k) {
				return true
			}
			for _, b := range rule.BackendRefs {
				if mirrorsTo(b.Filters, r.Namespace, k) {
					return true
				}
			}
		}
	}
	for _, r := range ix.grpcRoutes {
		for _, rule := range r.Spec.Rules {
			if mirrorsTo(grpcFilters(rule.Filters), r.Namespace, k) {
				return true
			}
			for _, b := range rule.BackendRefs {
				if mirrorsTo(grpcFilters(b.Filters), r.Namespace, k) {
					return true
				}
			}
		}
	}
	return false
}

// mirrorsTo reports whether one of filters, of a route in routeNS,
// mirrors to Service k.
func mirrorsTo(filters []gatewayv1.HTTPRouteFilter, routeNS string, k key) bool {
	for _, f := range filters {
		if f.RequestMirror == nil {
			continue
		}
		ref := f.RequestMirror.BackendRef
		ns := routeNS
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if keyOf(ns, string(ref.Name)) == k {
			return true
		}
	}
	return false
}

// --- outputs ----------------------------------------------------------------

// Flush rebuilds what changed since the last flush and pushes the real
// differences to the sink. It returns the number of changed resources.
func (ix *Index) Flush() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var updates []Update
	addr := Update{TypeURL: xds.AddressType}
	for k := range ix.dirtyPods {
		uid := ix.workloadUID(k)
		var msg proto.Message
		if p := ix.pods[k]; p != nil {
			if w := ix.buildWorkload(p); addressable(p, w) {
				msg = &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
			}
		}
		ix.publish(&addr, uid, msg)
	}
	for k := range ix.dirtySvcs {
		name := ix.serviceName(k)
		var msg proto.Message
		if s := ix.services[k]; s != nil && !s.external {
			msg = &workloadapi.Address{Type: &workloadapi.Address_Service{Service: ix.buildService(s)}}
		}
		ix.publish(&addr, name, msg)
	}
	auth := Update{TypeURL: xds.AuthorizationType}
	for k := range ix.dirtyAuthz {
		var msg proto.Message
		if p := ix.authz[k]; p != nil {
			if a := translateL4(p, ix.opts.RootNamespace); a != nil {
				msg = a
			}
		}
		ix.publish(&auth, k, msg)
	}
	wp := Update{TypeURL: xds.WaypointType}
	if ix.dirtyWaypoints {
		seen := map[string]bool{}
		in := ix.waypointInputs()
		for k, g := range ix.gateways {
			seen[k] = true
			ix.publish(&wp, k, ix.buildWaypointFrom(g, in))
		}
		for name := range ix.published[xds.WaypointType] {
			if !seen[name] {
				ix.publish(&wp, name, nil)
			}
		}
	}
	clear(ix.dirtyPods)
	clear(ix.dirtySvcs)
	clear(ix.dirtyAuthz)
	ix.dirtyWaypoints = false
	n := 0
	for _, u := range []Update{addr, auth, wp} {
		if len(u.Upserted)+len(u.Removed) > 0 {
			slices.SortFunc(u.Upserted, func(a, b Resource) int { return compareStrings(a.Name, b.Name) })
			slices.Sort(u.Removed)
			updates = append(updates, u)
			n += len(u.Upserted) + len(u.Removed)
		}
	}
	if len(updates) > 0 && ix.sink != nil {
		ix.sink.Push(updates)
	}
	return n
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// publish adds msg (nil: removal) to u if it differs from what was published.
func (ix *Index) publish(u *Update, name string, msg proto.Message) {
	pub := ix.published[u.TypeURL]
	old, had := pub[name]
	if msg == nil {
		if had {
			delete(pub, name)
			u.Removed = append(u.Removed, name)
		}
		return
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		ix.log.Error("marshal xds resource", "type", u.TypeURL, "name", name, "err", err)
		return
	}
	h := fnv.New64a()
	h.Write(b)
	v := strconv.FormatUint(h.Sum64(), 16)
	if had && old == v {
		return
	}
	pub[name] = v
	u.Upserted = append(u.Upserted, Resource{Name: name, Version: v, Message: msg, Bytes: b})
}

// WorkloadUID is the resource name of a pod's workload.
func (ix *Index) workloadUID(k key) string { return ix.opts.ClusterID + "//Pod/" + k }

// WorkloadName returns the xDS resource name of a pod's workload.
func (ix *Index) WorkloadName(namespace, pod string) string {
	return ix.workloadUID(keyOf(namespace, pod))
}

// ServiceName returns the xDS resource name of a service.
func (ix *Index) ServiceName(namespace, name string) string {
	return ix.serviceName(keyOf(namespace, name))
}

func (ix *Index) serviceName(k key) string {
	ns, name, _ := cutKey(k)
	return ns + "/" + ix.hostname(ns, name)
}

func (ix *Index) hostname(ns, name string) string {
	return name + "." + ns + ".svc." + ix.opts.DomainSuffix
}

func cutKey(k key) (ns, name string, ok bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return "", k, false
}
