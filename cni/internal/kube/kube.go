// Package kube is the node agent's Kubernetes client: pods and namespaces
// (list, watch, patch) and events.k8s.io/v1 Events, and nothing else.
//
// It exists because client-go's clientset (kubernetes.Interface), its
// informer factory and tools/events all import
// k8s.io/client-go/kubernetes/scheme, which registers every built-in API
// group at init: the agent, one per node, linked 56 k8s.io/api packages
// and spent most of its start-up heap on types it never uses. This client
// has a scheme of its own holding only core/v1 and events.k8s.io/v1.
package kube

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// Client talks to the apiserver about pods, namespaces and Events.
type Client struct {
	core   *rest.RESTClient // "" v1
	events *rest.RESTClient // events.k8s.io/v1
}

// NewForConfig returns a Client for cfg. Both API groups share one HTTP
// client (one connection) and, as with the clientset, one rate limiter
// when cfg sets a QPS.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	scheme := runtime.NewScheme()
	if err := errors.Join(corev1.AddToScheme(scheme), eventsv1.AddToScheme(scheme)); err != nil {
		return nil, fmt.Errorf("kube: building the scheme: %w", err)
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()

	c := rest.CopyConfig(cfg)
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if c.RateLimiter == nil && c.QPS > 0 {
		if c.Burst <= 0 {
			return nil, errors.New("kube: burst must be positive when QPS is set")
		}
		c.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(c.QPS, c.Burst)
	}
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	client := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		gc := rest.CopyConfig(c)
		gc.APIPath = apiPath
		gc.GroupVersion = &gv
		gc.NegotiatedSerializer = codecs
		// Protobuf is cheaper to decode than JSON and the apiserver
		// serves it for every built-in type.
		gc.ContentType = runtime.ContentTypeProtobuf
		gc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		rc, err := rest.RESTClientForConfigAndClient(gc, hc)
		if err != nil {
			return nil, fmt.Errorf("kube: %s client: %w", gv, err)
		}
		return rc, nil
	}
	var out Client
	if out.core, err = client("/api", corev1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	if out.events, err = client("/apis", eventsv1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	return &out, nil
}

// PodsOnNode lists and watches the pods scheduled to node, in every
// namespace.
func (c *Client) PodsOnNode(node string) *cache.ListWatch {
	return c.listWatch(c.core, "pods", fields.OneTermEqualSelector("spec.nodeName", node).String())
}

// Namespaces lists and watches namespaces.
func (c *Client) Namespaces() *cache.ListWatch {
	return c.listWatch(c.core, "namespaces", "")
}

func (c *Client) listWatch(rc *rest.RESTClient, resource, fieldSelector string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fieldSelector
			return rc.Get().Resource(resource).VersionedParams(&o, metav1.ParameterCodec).Do(ctx).Get()
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fieldSelector
			o.Watch = true
			return rc.Get().Resource(resource).VersionedParams(&o, metav1.ParameterCodec).Watch(ctx)
		},
	}
}

// PatchPod patches the pod ns/name (the answer is not decoded).
func (c *Client) PatchPod(ctx context.Context, ns, name string, pt types.PatchType, patch []byte) error {
	return c.core.Patch(pt).Namespace(ns).Resource("pods").Name(name).Body(patch).Do(ctx).Error()
}

// CreateEvent creates ev in its namespace.
func (c *Client) CreateEvent(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	out := &eventsv1.Event{}
	err := c.events.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Into(out)
	return out, err
}

// PatchEvent applies a JSON merge patch to the Event ns/name.
func (c *Client) PatchEvent(ctx context.Context, ns, name string, patch []byte) (*eventsv1.Event, error) {
	out := &eventsv1.Event{}
	err := c.events.Patch(types.MergePatchType).Namespace(ns).Resource("events").Name(name).
		Body(patch).Do(ctx).Into(out)
	return out, err
}
