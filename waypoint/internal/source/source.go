// Package source feeds the waypoint its configuration: its own resource
// (skiff.waypoint.v1.Waypoint, compiled by package config) and the mesh
// state its endpoints come from (istio.workload.Address), either from the
// control plane over delta xDS or from a local YAML file re-read on
// change. A problem confined to one route rule, route, service or policy
// only fails that part closed (config.Compile's warnings, logged once per
// configuration); a resource that cannot be read at all is rejected
// (NACKed, or logged for the file) and the last good configuration stays
// in force.
package source

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/meshstate/localconfig"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Waypoint holds the current compiled configuration.
type Waypoint struct {
	name, namespace string
	cur             atomic.Pointer[config.Waypoint]
	log             *slog.Logger

	mu      sync.Mutex
	version uint64
	loaded  chan struct{}
	before  []func(*config.Waypoint)
}

// NewWaypoint returns a holder for the waypoint namespace/name, empty
// until the first configuration arrives. What a configuration fails
// closed is logged to logger (nil: discarded).
func NewWaypoint(namespace, name string, logger *slog.Logger) *Waypoint {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Waypoint{name: name, namespace: namespace, log: logger, loaded: make(chan struct{})}
}

// BeforeInstall has fn see every configuration before requests do, so
// that state derived from it (the rate limiter's buckets) is ready when the
// configuration goes live. Configurations are passed one at a time, in
// order. Call it before the first configuration arrives.
func (w *Waypoint) BeforeInstall(fn func(*config.Waypoint)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.before = append(w.before, fn)
}

// Load returns the current configuration; nil before the first.
func (w *Waypoint) Load() *config.Waypoint { return w.cur.Load() }

// Loaded is closed once a configuration was accepted.
func (w *Waypoint) Loaded() <-chan struct{} { return w.loaded }

// Version counts accepted configurations.
func (w *Waypoint) Version() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.version
}

// Set compiles and installs a resource; on error nothing changes.
func (w *Waypoint) Set(r *waypointapi.Waypoint) error {
	if r.GetName() != w.name || r.GetNamespace() != w.namespace {
		return fmt.Errorf("configuration for %s/%s, not this waypoint (%s/%s)", r.GetNamespace(), r.GetName(), w.namespace, w.name)
	}
	c, err := config.Compile(r)
	if err != nil {
		return err
	}
	w.install(c)
	return nil
}

// clear installs an empty configuration: the resource was removed (its
// Gateway is being deleted), so the waypoint serves nothing.
func (w *Waypoint) clear() {
	c, err := config.Compile(&waypointapi.Waypoint{Name: w.name, Namespace: w.namespace})
	if err == nil {
		w.install(c)
	}
}

func (w *Waypoint) install(c *config.Waypoint) {
	for _, warn := range c.Warnings() {
		w.log.Warn("waypoint configuration: part failed closed", "field", warn.Field, "effect", warn.Effect, "err", warn.Err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range w.before {
		fn(c)
	}
	w.cur.Store(c)
	w.version++
	select {
	case <-w.loaded:
	default:
		close(w.loaded)
	}
}

// Subscription is the waypoint's own resource over xDS.
func (w *Waypoint) Subscription() xds.Subscription {
	name := w.namespace + "/" + w.name
	return xds.Subscription{
		TypeURL: xds.WaypointType,
		Names:   []string{name},
		Apply: func(d xds.Delta) error {
			for _, r := range d.Updated {
				if r.Name != name {
					return fmt.Errorf("waypoint resource %q was not asked for", r.Name)
				}
				var wp waypointapi.Waypoint
				if err := r.Body.UnmarshalTo(&wp); err != nil {
					return fmt.Errorf("waypoint %s: %w", r.Name, err)
				}
				if err := w.Set(&wp); err != nil {
					return fmt.Errorf("waypoint %s: %w", r.Name, err)
				}
			}
			for _, n := range d.Removed {
				if n == name {
					w.clear()
				}
			}
			return nil
		},
	}
}

// File is the local configuration file: the mesh state in the format of
// ztunnel's local mode (pkg/meshstate/localconfig: workloads, services),
// and the waypoint's resource in its JSON form (protojson field names):
//
//	workloads:
//	- {name: echo-1, namespace: default, addresses: [10.0.1.2], serviceAccount: echo,
//	   services: {default/echo.default.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]}}
//	services:
//	- {name: echo, namespace: default, addresses: [10.96.0.10], ports: [{servicePort: 80, targetPort: 8080}]}
//	waypoint:
//	  name: waypoint
//	  namespace: default
//	  services:
//	  - name: echo
//	    namespace: default
//	    hostname: echo.default.svc.cluster.local
//	    vips: [10.96.0.10]       # addresses as text (protojson's base64 works too)
//	    ports: [{port: 80, targetPort: 8080, appProtocol: http}]
//	    httpRoutes: [...]
type File struct {
	localconfig.File `json:",inline"`
	Waypoint         json.RawMessage `json:"waypoint"`
}

// ApplyFile parses a whole local file into mesh and w. Nothing changes
// unless all of it is valid.
func ApplyFile(data []byte, mesh *meshstate.Store, w *Waypoint) error {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	if len(f.Policies) > 0 {
		return errors.New("policies: the waypoint takes its policies from the waypoint resource (waypoint.policies, waypoint.services[].policies)")
	}
	if len(f.Waypoint) == 0 {
		return errors.New("waypoint: missing")
	}
	raw, err := textVIPs(f.Waypoint)
	if err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	var wp waypointapi.Waypoint
	if err := protojson.Unmarshal(raw, &wp); err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	if wp.GetName() != w.name || wp.GetNamespace() != w.namespace {
		return fmt.Errorf("waypoint: configuration for %s/%s, not this waypoint (%s/%s)", wp.GetNamespace(), wp.GetName(), w.namespace, w.name)
	}
	c, err := config.Compile(&wp)
	if err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	state, err := f.Convert()
	if err != nil {
		return err
	}
	if err := mesh.Replace(state); err != nil {
		return err
	}
	mesh.SetLoaded()
	w.install(c)
	return nil
}

// textVIPs rewrites services[].vips written as IP addresses into the
// base64 bytes protojson reads, so that people can write addresses.
func textVIPs(raw json.RawMessage) (json.RawMessage, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	svcs, _ := doc["services"].([]any)
	for _, s := range svcs {
		svc, _ := s.(map[string]any)
		vips, _ := svc["vips"].([]any)
		for i, v := range vips {
			if str, ok := v.(string); ok {
				if a, err := netip.ParseAddr(str); err == nil {
					vips[i] = base64.StdEncoding.EncodeToString(a.AsSlice())
				}
			}
		}
	}
	return json.Marshal(doc)
}
