// Package deployer turns waypoint Gateways (class istio-waypoint) into
// running waypoints: a ServiceAccount, Deployment and Service per Gateway,
// owned by it (so deleting the Gateway deletes them), and reports the
// Gateway's Accepted and Programmed conditions and address. It also creates
// the istio-waypoint GatewayClass and reports, for HTTPRoutes and GRPCRoutes
// attached to Services, each parent's Accepted and ResolvedRefs conditions,
// and PartiallyInvalid when the waypoint answers some rules with 500 because
// it cannot apply their filters.
package deployer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
)

// Names of Istio's waypoint contract.
const (
	ClassName      = "istio-waypoint"
	ControllerName = "istio.io/mesh-controller"
	labelGateway   = "gateway.networking.k8s.io/gateway-name"
	HBONEPort      = 15008
	ReadinessPort  = 15021
	MetricsPort    = 15020
)

// Options configure the waypoints the deployer creates.
type Options struct {
	Image           string
	ImagePullPolicy corev1.PullPolicy
	Replicas        int32
	// Requests and Limits of the waypoint container (resource quantities).
	CPURequest, MemoryRequest, CPULimit, MemoryLimit string
	// XDSAddress is where waypoints reach istiod-lite.
	XDSAddress string
	// TrustDomain of the mesh.
	TrustDomain string
	// OTLPEndpoint, when set, is where waypoints send traces (OTLP/gRPC);
	// OTLPInsecure sends them without TLS.
	OTLPEndpoint string
	OTLPInsecure bool
	// RateLimitService is Envoy's rate-limit service (host:port, gRPC)
	// that waypoints ask for global rate limits; a Gateway's parameters
	// may name another.
	RateLimitService string
	// RateLimitPolicies reports RateLimitPolicy status (its CRD must be
	// installed).
	RateLimitPolicies bool
	// HBONETransport is the waypoints' hboneTransport setting (auto, tcp
	// or quic; empty means the waypoint's default, auto). Unless it is
	// tcp, the Deployment and Service also declare UDP 15008, HBONE over
	// QUIC.
	HBONETransport string
}

// Setup registers the deployer (leader-elected) with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.Image == "" {
		o.Image = "skiff/waypoint:latest"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.XDSAddress == "" {
		o.XDSAddress = "istiod.istio-system.svc:15012"
	}
	switch o.HBONETransport {
	case "", "auto", "tcp", "quic":
	default:
		return fmt.Errorf("waypoint HBONE transport %q: want auto, tcp or quic", o.HBONETransport)
	}
	d := &deployer{c: mgr.GetClient(), params: mgr.GetAPIReader(), o: o, events: mgr.GetEventRecorder("istiod-lite")}
	// The class is created on start and kept as it should be: recreated if
	// deleted, re-accepted if edited.
	log := mgr.GetLogger().WithName("waypoint-deployer")
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		// Not fatal: the controller below also keeps the class, and a
		// conflict with it or a slow apiserver is retried here.
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 10*time.Second) {
			err := d.ensureClass(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			log.Info("ensuring the waypoint GatewayClass; will retry", "err", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
		<-ctx.Done()
		return nil
	})); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("waypoint-gatewayclass").
		For(&gatewayv1.GatewayClass{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == ClassName }))).
		Complete(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, d.ensureClass(ctx)
		})); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("waypoint-deployer").
		For(&gatewayv1.Gateway{}).
		Owns(&corev1.Service{}).Owns(&appsv1.Deployment{}).Owns(&corev1.ServiceAccount{}).
		Complete(d); err != nil {
		return err
	}
	for name, kind := range map[string]routeKind{"mesh-httproute-status": httpRoutes, "mesh-grpcroute-status": grpcRoutes} {
		// A Service appearing or going changes the status of the routes
		// in its namespace (parents and backends).
		listRoutes := routesInNamespace(mgr.GetClient(), kind)
		if err := ctrl.NewControllerManagedBy(mgr).Named(name).For(kind.newObj()).
			Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(listRoutes)).
			Complete(&routeStatus{c: mgr.GetClient(), kind: kind}); err != nil {
			return err
		}
	}
	if o.RateLimitPolicies {
		if err := ctrl.NewControllerManagedBy(mgr).Named("ratelimitpolicy-status").
			For(&policyv1alpha1.RateLimitPolicy{}).
			// A target appearing, going or renaming a rule changes the
			// status of the policies that target it.
			Watches(&gatewayv1.HTTPRoute{}, handler.EnqueueRequestsFromMapFunc(rateLimitPoliciesTargeting(mgr.GetClient(), "HTTPRoute"))).
			Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(rateLimitPoliciesTargeting(mgr.GetClient(), "Service"))).
			Complete(&rateLimitStatus{c: mgr.GetClient()}); err != nil {
			return err
		}
	}
	return nil
}

func routesInNamespace(c client.Client, kind routeKind) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var reqs []reconcile.Request
		var list client.ObjectList = &gatewayv1.HTTPRouteList{}
		if _, ok := kind.newObj().(*gatewayv1.GRPCRoute); ok {
			list = &gatewayv1.GRPCRouteList{}
		}
		if err := c.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			if co, ok := o.(client.Object); ok {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(co)})
			}
			return nil
		})
		return reqs
	}
}

type deployer struct {
	c client.Client
	// params reads parameters ConfigMaps from the API server: the cache
	// holds only the ConfigMaps istiod-lite publishes.
	params client.Reader
	o      Options
	events events.EventRecorder
}

// ensureClass creates the istio-waypoint GatewayClass and accepts it.
func (d *deployer) ensureClass(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		gc := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ClassName}}
		_, err := controllerutil.CreateOrUpdate(ctx, d.c, gc, func() error {
			gc.Spec.ControllerName = ControllerName
			d := "Skiff waypoints: L7 proxies of the ambient mesh"
			gc.Spec.Description = &d
			return nil
		})
		if err != nil {
			return err
		}
		accepted := metav1.Condition{
			Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.GatewayClassReasonAccepted), Message: "Handled by Skiff's istiod-lite", ObservedGeneration: gc.Generation,
		}
		if c := meta.FindStatusCondition(gc.Status.Conditions, accepted.Type); c != nil && c.Status == accepted.Status && c.ObservedGeneration == accepted.ObservedGeneration {
			return nil
		}
		meta.SetStatusCondition(&gc.Status.Conditions, accepted)
		return d.c.Status().Update(ctx, gc)
	})
	if err != nil {
		return fmt.Errorf("gatewayclass %s: %w", ClassName, err)
	}
	return nil
}

func (d *deployer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var gw gatewayv1.Gateway
	if err := d.c.Get(ctx, req.NamespacedName, &gw); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if gw.Spec.GatewayClassName != ClassName || gw.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	// A waypoint has one HBONE listener on 15008.
	valid, msg := validListeners(&gw)
	if !valid {
		d.events.Eventf(&gw, nil, corev1.EventTypeWarning, "InvalidListeners", "Deploy", "%s", msg)
		return reconcile.Result{}, d.setStatus(ctx, &gw, gatewayv1.GatewayReasonListenersNotValid, msg, "", nil)
	}
	params, err := d.parameters(ctx, &gw)
	if errors.Is(err, errInvalidParameters) {
		// The waypoint keeps running as it was: a typo in its parameters
		// must not take it down.
		d.events.Eventf(&gw, nil, corev1.EventTypeWarning, "InvalidParameters", "Deploy", "%s", err.Error())
		return reconcile.Result{RequeueAfter: parametersResync}, d.setStatus(ctx, &gw, gatewayv1.GatewayReasonInvalidParameters, err.Error(), "", nil)
	} else if err != nil {
		return reconcile.Result{}, err
	}
	var changed []string
	note := func(kind string, res controllerutil.OperationResult) {
		if res != controllerutil.OperationResultNone {
			changed = append(changed, kind+" "+string(res))
		}
	}
	labels := map[string]string{labelGateway: gw.Name, "gateway.istio.io/managed": "istio.io-mesh-controller"}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: gw.Name}}
	res, err := controllerutil.CreateOrUpdate(ctx, d.c, sa, func() error {
		sa.Labels = mergeLabels(sa.Labels, labels)
		return controllerutil.SetControllerReference(&gw, sa, d.c.Scheme())
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("serviceaccount: %w", err)
	}
	note("ServiceAccount", res)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: gw.Name}}
	res, err = controllerutil.CreateOrUpdate(ctx, d.c, svc, func() error {
		svc.Labels = mergeLabels(svc.Labels, labels)
		svc.Spec.Selector = map[string]string{labelGateway: gw.Name}
		svc.Spec.Ports = servicePorts(d.servesQUIC())
		return controllerutil.SetControllerReference(&gw, svc, d.c.Scheme())
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("service: %w", err)
	}
	note("Service", res)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: gw.Name}}
	res, err = controllerutil.CreateOrUpdate(ctx, d.c, dep, func() error {
		dep.Labels = mergeLabels(dep.Labels, labels)
		d.deploymentSpec(&gw, dep, labels, params)
		return controllerutil.SetControllerReference(&gw, dep, d.c.Scheme())
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("deployment: %w", err)
	}
	note("Deployment", res)
	if len(changed) > 0 {
		d.events.Eventf(&gw, nil, corev1.EventTypeNormal, "Deployed", "Deploy", "waypoint %s: %s", gw.Name, strings.Join(changed, ", "))
	}
	var addrs []gatewayv1.GatewayStatusAddress
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			addrs = append(addrs, gatewayv1.GatewayStatusAddress{Type: ptr.To(gatewayv1.IPAddressType), Value: ip})
		}
	}
	var again reconcile.Result
	if gw.Spec.Infrastructure != nil && gw.Spec.Infrastructure.ParametersRef != nil {
		// ConfigMaps are not watched (see params): look again later.
		again.RequeueAfter = parametersResync
	}
	return again, d.setStatus(ctx, &gw, "", "", svc.Name, addrs)
}

func validListeners(gw *gatewayv1.Gateway) (bool, string) {
	if len(gw.Spec.Listeners) == 0 {
		return false, "a waypoint needs a listener {name: mesh, port: 15008, protocol: HBONE}"
	}
	for _, l := range gw.Spec.Listeners {
		if l.Protocol != "HBONE" || l.Port != HBONEPort {
			return false, fmt.Sprintf("listener %q: a waypoint listens only with protocol HBONE on port %d", l.Name, HBONEPort)
		}
	}
	return true, ""
}

// servesQUIC reports whether waypoints listen on UDP 15008 as well.
func (d *deployer) servesQUIC() bool { return d.o.HBONETransport != "tcp" }

// servicePorts are the waypoint Service's ports; UDP 15008 carries HBONE
// over QUIC.
func servicePorts(quic bool) []corev1.ServicePort {
	ports := []corev1.ServicePort{{Name: "mesh", Port: HBONEPort, TargetPort: intstr.FromInt32(HBONEPort), Protocol: corev1.ProtocolTCP}}
	if quic {
		ports = append(ports, corev1.ServicePort{Name: "mesh-quic", Port: HBONEPort, TargetPort: intstr.FromInt32(HBONEPort), Protocol: corev1.ProtocolUDP})
	}
	return ports
}

// containerPorts are the waypoint container's ports; UDP 15008 carries
// HBONE over QUIC.
func containerPorts(quic bool) []corev1.ContainerPort {
	ports := []corev1.ContainerPort{
		{Name: "hbone", ContainerPort: HBONEPort, Protocol: corev1.ProtocolTCP},
		{Name: "status", ContainerPort: ReadinessPort, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
	}
	if quic {
		ports = append(ports, corev1.ContainerPort{Name: "hbone-quic", ContainerPort: HBONEPort, Protocol: corev1.ProtocolUDP})
	}
	return ports
}

func mergeLabels(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	maps.Copy(dst, src)
	return dst
}

// annotationReplicas records the replica count the deployer last set from
// its configuration (istiod.waypoint.replicas).
const annotationReplicas = "skiff.dev/waypoint-replicas"

// setReplicas sets the Deployment's replicas when it is new and when the
// configured count changed since it was last set. In between they belong
// to kubectl scale or a HorizontalPodAutoscaler, as with Istio's waypoints.
func (d *deployer) setReplicas(dep *appsv1.Deployment) {
	want := strconv.Itoa(int(d.o.Replicas))
	if dep.Spec.Replicas != nil && dep.Annotations[annotationReplicas] == want {
		return
	}
	dep.Spec.Replicas = ptr.To(d.o.Replicas)
	if dep.Annotations == nil {
		dep.Annotations = map[string]string{}
	}
	dep.Annotations[annotationReplicas] = want
}

func (d *deployer) deploymentSpec(gw *gatewayv1.Gateway, dep *appsv1.Deployment, labels map[string]string, params []corev1.EnvVar) {
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		list corev1.ResourceList
		name corev1.ResourceName
		v    string
	}{{res.Requests, corev1.ResourceCPU, d.o.CPURequest}, {res.Requests, corev1.ResourceMemory, d.o.MemoryRequest}, {res.Limits, corev1.ResourceCPU, d.o.CPULimit}, {res.Limits, corev1.ResourceMemory, d.o.MemoryLimit}} {
		if q.v != "" {
			if v, err := resource.ParseQuantity(q.v); err == nil {
				q.list[q.name] = v
			}
		}
	}
	env := []corev1.EnvVar{
		{Name: "XDS_ADDRESS", Value: d.o.XDSAddress},
		{Name: "TRUST_DOMAIN", Value: d.o.TrustDomain},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "SERVICE_ACCOUNT", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
		// The Go runtime collects harder as the heap nears the container's
		// memory limit (the node's allocatable memory when it has none).
		{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "waypoint", Resource: "limits.memory"}}},
	}
	if d.o.OTLPEndpoint != "" {
		env = append(env, corev1.EnvVar{Name: "OTLP_ENDPOINT", Value: d.o.OTLPEndpoint},
			corev1.EnvVar{Name: "OTLP_INSECURE", Value: strconv.FormatBool(d.o.OTLPInsecure)})
	}
	if d.o.RateLimitService != "" {
		env = append(env, corev1.EnvVar{Name: "RATE_LIMIT_SERVICE", Value: d.o.RateLimitService})
	}
	if d.o.HBONETransport != "" {
		env = append(env, corev1.EnvVar{Name: "HBONE_TRANSPORT", Value: d.o.HBONETransport})
	}
	env = overrideEnv(env, params)
	podLabels := mergeLabels(map[string]string{}, labels)
	// The waypoint speaks HBONE itself (as Istio's waypoints): the node's
	// redirection leaves it alone, and peers tunnel straight to it.
	podLabels["istio.io/dataplane-mode"] = "none"
	podLabels["networking.istio.io/tunnel"] = "http"
	d.setReplicas(dep)
	dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{labelGateway: gw.Name}}
	dep.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: map[string]string{
			// Prometheus' annotation-based discovery scrapes waypoints as
			// it does Istio's.
			"prometheus.io/scrape": "true",
			"prometheus.io/port":   strconv.Itoa(MetricsPort),
			"prometheus.io/path":   "/metrics",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName:            gw.Name,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers: []corev1.Container{{
				Name:            "waypoint",
				Image:           d.o.Image,
				ImagePullPolicy: d.o.ImagePullPolicy,
				Args:            []string{"--waypoint=" + gw.Namespace + "/" + gw.Name},
				Env:             env,
				Ports:           containerPorts(d.servesQUIC()),
				ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(ReadinessPort)}}},
				Resources:       res,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "istio-token", MountPath: "/var/run/secrets/tokens", ReadOnly: true},
					{Name: "istiod-ca-cert", MountPath: "/var/run/secrets/istio", ReadOnly: true},
				},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1337)},
			}},
			Volumes: []corev1.Volume{
				{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
					ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "istio-ca", ExpirationSeconds: ptr.To[int64](43200), Path: "istio-token"},
				}}}}},
				{Name: "istiod-ca-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"}}}},
			},
		},
	}
}

// setStatus reports the Gateway's conditions: accepted when refused is
// empty, otherwise not accepted for that reason.
func (d *deployer) setStatus(ctx context.Context, gw *gatewayv1.Gateway, refused gatewayv1.GatewayConditionReason, msg, svcName string, addrs []gatewayv1.GatewayStatusAddress) error {
	accepted := refused == ""
	acc := metav1.Condition{Type: string(gatewayv1.GatewayConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonAccepted), Message: "Waypoint deployed", ObservedGeneration: gw.Generation}
	prog := metav1.Condition{Type: string(gatewayv1.GatewayConditionProgrammed), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonProgrammed), Message: "Service " + svcName + " has an address", ObservedGeneration: gw.Generation}
	if !accepted {
		acc.Status, acc.Reason, acc.Message = metav1.ConditionFalse, string(refused), msg
		prog.Status, prog.Reason, prog.Message = metav1.ConditionFalse, string(gatewayv1.GatewayReasonInvalid), msg
	} else if len(addrs) == 0 {
		prog.Status, prog.Reason, prog.Message = metav1.ConditionFalse, string(gatewayv1.GatewayReasonAddressNotAssigned), "Service "+svcName+" has no cluster IP yet"
	}
	meta.SetStatusCondition(&gw.Status.Conditions, acc)
	meta.SetStatusCondition(&gw.Status.Conditions, prog)
	gw.Status.Addresses = addrs
	gw.Status.Listeners = nil
	for _, l := range gw.Spec.Listeners {
		ls := gatewayv1.ListenerStatus{Name: l.Name, SupportedKinds: []gatewayv1.RouteGroupKind{}, Conditions: []metav1.Condition{}}
		meta.SetStatusCondition(&ls.Conditions, metav1.Condition{Type: string(gatewayv1.ListenerConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.ListenerReasonAccepted), ObservedGeneration: gw.Generation})
		if refused == gatewayv1.GatewayReasonListenersNotValid {
			meta.SetStatusCondition(&ls.Conditions, metav1.Condition{Type: string(gatewayv1.ListenerConditionAccepted), Status: metav1.ConditionFalse, Reason: string(gatewayv1.ListenerReasonUnsupportedProtocol), Message: msg, ObservedGeneration: gw.Generation})
		}
		meta.SetStatusCondition(&ls.Conditions, metav1.Condition{Type: string(gatewayv1.ListenerConditionProgrammed), Status: prog.Status, Reason: prog.Reason, ObservedGeneration: gw.Generation})
		gw.Status.Listeners = append(gw.Status.Listeners, ls)
	}
	if err := d.c.Status().Update(ctx, gw); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("gateway %s/%s status: %w", gw.Namespace, gw.Name, err)
	} else if apierrors.IsConflict(err) {
		return err // requeue with the fresh object
	}
	return nil
}
