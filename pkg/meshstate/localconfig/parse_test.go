package localconfig

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
)

const sample = `
workloads:
- name: echo
  namespace: default
  serviceAccount: echo
  addresses: [10.0.1.2]
  node: node-a
  services:
    default/echo.default.svc.cluster.local:
    - {servicePort: 80, targetPort: 8080}
  authorizationPolicies: [default/allow-sleep]
- name: legacy
  namespace: default
  addresses: [10.0.1.3]
  protocol: NONE
  healthy: false
  waypoint: {hostname: {namespace: default, hostname: wp.default.svc.cluster.local}, hbonePort: 15009}
services:
- name: echo
  namespace: default
  addresses: [10.96.0.10]
  ports: [{servicePort: 80, targetPort: 8080}]
policies:
- name: allow-sleep
  namespace: default
  scope: WorkloadSelector
  groups:
  - rules:
    - matches:
      - principals: [cluster.local/ns/default/sa/sleep]
        sourceIps: [10.0.0.0/16, 10.9.9.9]
        destinationPorts: [8080]
- name: deny-all
  namespace: other
  action: Deny
  groups: [{}]
`

func TestParseSample(t *testing.T) {
	c, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	st := meshstate.NewStore("istio-system", "cluster.local")
	if err := st.Replace(c); err != nil {
		t.Fatal(err)
	}
	snap := st.Snapshot()
	echo := snap.WorkloadByIP(netip.MustParseAddr("10.0.1.2"))
	if echo == nil || echo.UID != "default/echo" || echo.Protocol != meshstate.TunnelHBONE || !echo.Healthy {
		t.Fatalf("echo = %+v", echo)
	}
	if got := echo.Identity().String(); got != "spiffe://cluster.local/ns/default/sa/echo" {
		t.Errorf("identity %s", got)
	}
	legacy := snap.Workload("default/legacy")
	if legacy.Protocol != meshstate.TunnelNone || legacy.Healthy || legacy.ServiceAccount != "default" {
		t.Errorf("legacy = %+v", legacy)
	}
	if wp := legacy.Waypoint; wp == nil || wp.Hostname.Key() != "default/wp.default.svc.cluster.local" || wp.Port() != 15009 {
		t.Errorf("legacy waypoint = %+v", wp)
	}
	svc := snap.ServiceByVIP(netip.MustParseAddr("10.96.0.10"))
	if svc == nil || svc.Hostname != "echo.default.svc.cluster.local" {
		t.Fatalf("service = %+v", svc)
	}
	if eps := snap.Endpoints(svc.Key()); len(eps) != 1 || eps[0] != echo {
		t.Errorf("endpoints = %v", eps)
	}
	pols := snap.PoliciesFor(echo)
	if len(pols) != 1 || pols[0].Key() != "default/allow-sleep" {
		t.Fatalf("policies for echo = %v", pols)
	}
	m := pols[0].Groups[0].Rules[0].Matches[0]
	if len(m.SourceIPs) != 2 || m.SourceIPs[1] != netip.MustParsePrefix("10.9.9.9/32") {
		t.Errorf("source IPs %v", m.SourceIPs)
	}
	if deny := snap.Policies()[1]; deny.Action != policy.Deny || deny.Scope != policy.Namespace {
		t.Errorf("deny-all = %+v", deny)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "workloads: [{name: a, namespace: b, adresses: [1.2.3.4]}]", `unknown field "adresses"`},
		{"not yaml", "workloads: [", "parsing config"},
		{"bad address", "workloads: [{name: a, namespace: b, addresses: [10.0.0.300]}]", "workloads[0] (b/a): addresses[0]"},
		{"missing name", "workloads: [{namespace: b}]", "name and namespace are required"},
		{"bad protocol", "workloads: [{name: a, namespace: b, protocol: QUIC}]", `protocol "QUIC"`},
		{"bad service key", "workloads: [{name: a, namespace: b, services: {nope: []}}]", "not <namespace>/<hostname>"},
		{"bad policy ref", "workloads: [{name: a, namespace: b, authorizationPolicies: [x]}]", "not <namespace>/<name>"},
		{"port too big", "services: [{name: a, namespace: b, ports: [{servicePort: 70000}]}]", "parsing config"},
		{"bad waypoint", "services: [{name: a, namespace: b, waypoint: {address: nope}}]", "waypoint.address"},
		{"bad scope", "policies: [{name: a, namespace: b, scope: Cluster}]", `scope "Cluster"`},
		{"bad action", "policies: [{name: a, namespace: b, action: Audit}]", `action "Audit"`},
		{"bad cidr", "policies: [{name: a, namespace: b, groups: [{rules: [{matches: [{sourceIps: [10.0.0.0/33]}]}]}]}]", "matches[0].sourceIps[0]"},
		{"bad policy port", "policies: [{name: a, namespace: b, groups: [{rules: [{matches: [{destinationPorts: [70000]}]}]}]}]", "70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestStoreRejectsInconsistentConfig(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"duplicate workload", "workloads: [{name: a, namespace: b}, {name: a, namespace: b}]", "listed twice"},
		{"shared address", "workloads: [{name: a, namespace: b, addresses: [10.0.0.1]}, {name: c, namespace: b, addresses: [10.0.0.1]}]", "share address"},
		{"vip is a workload ip", "workloads: [{name: a, namespace: b, addresses: [10.0.0.1]}]\nservices: [{name: s, namespace: b, addresses: [10.0.0.1]}]", "is also workload"},
		{"duplicate service port", "services: [{name: s, namespace: b, ports: [{servicePort: 80}, {servicePort: 80}]}]", "listed twice"},
		{"bad trust domain", "workloads: [{name: a, namespace: b, trustDomain: 'Bad Domain'}]", "trust domain"},
		{"waypoint with both", "workloads: [{name: a, namespace: b, waypoint: {address: 10.0.0.9, hostname: {namespace: x, hostname: y}}}]", "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := meshstate.NewStore("istio-system", "cluster.local")
			good, err := Parse([]byte(sample))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Replace(good); err != nil {
				t.Fatal(err)
			}
			before, changed := st.Snapshot(), st.Changed()
			c, err := Parse([]byte(tt.yaml))
			if err == nil {
				err = st.Replace(c)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to mention %q", err, tt.want)
			}
			if st.Snapshot() != before {
				t.Fatal("rejected config changed the state")
			}
			select {
			case <-changed:
				t.Fatal("rejected config signalled a change")
			default:
			}
		})
	}
}
