package source

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

const goodFile = `
workloads:
- name: echo-1
  namespace: default
  serviceAccount: echo
  addresses: [10.0.1.2]
  protocol: HBONE
  services:
    default/echo.default.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]
services:
- name: echo
  namespace: default
  hostname: echo.default.svc.cluster.local
  addresses: [10.96.0.10]
  ports: [{servicePort: 80, targetPort: 8080}]
waypoint:
  name: waypoint
  namespace: default
  services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
    httpRoutes:
    - name: r
      namespace: default
      rules:
      - backends: [{name: echo, namespace: default, hostname: echo.default.svc.cluster.local, port: 80, weight: 1}]
`

func TestApplyFile(t *testing.T) {
	mesh := meshstate.NewStore("istio-system", "cluster.local")
	w := NewWaypoint("default", "waypoint", nil)
	if err := ApplyFile([]byte(goodFile), mesh, w); err != nil {
		t.Fatal(err)
	}
	c := w.Load()
	svc := c.ServiceByVIP(netip.MustParseAddr("10.96.0.10"))
	if svc == nil || svc.HTTP == nil || len(svc.HTTP.Entries) != 1 {
		t.Fatalf("service by VIP: %+v", svc)
	}
	if !mesh.IsLoaded() || len(mesh.Snapshot().Endpoints("default/echo.default.svc.cluster.local")) != 1 {
		t.Fatal("the mesh state was not loaded")
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not YAML", "{", "parsing"},
		{"unknown field", goodFile + "extra: 1\n", "unknown field"},
		{"no waypoint", "workloads: []\n", "waypoint: missing"},
		{"another waypoint", strings.Replace(goodFile, "name: waypoint", "name: other", 1), "not this waypoint"},
		{"bad route", strings.Replace(goodFile, "weight: 1", "weight: -1", 1), "waypoint"},
		{"bad workload", strings.Replace(goodFile, "addresses: [10.0.1.2]", "addresses: [nope]", 1), "workloads[0]"},
		{"policies belong to the waypoint resource", goodFile + "policies: [{name: p, namespace: default}]\n", "policies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ApplyFile([]byte(tc.file), mesh, w)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if w.Load() != c {
				t.Fatal("a rejected file replaced the configuration")
			}
		})
	}
}

func FuzzApplyFile(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte("waypoint: {name: waypoint, namespace: default}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mesh := meshstate.NewStore("istio-system", "cluster.local")
		w := NewWaypoint("default", "waypoint", nil)
		err := ApplyFile(data, mesh, w)
		if err != nil {
			if w.Load() != nil || mesh.IsLoaded() {
				t.Fatal("a rejected file changed the state")
			}
			return
		}
		if w.Load() == nil || !mesh.IsLoaded() {
			t.Fatal("an accepted file left the state empty")
		}
	})
}

// BeforeInstall's functions see each configuration, in order, before
// Load returns it.
func TestBeforeInstall(t *testing.T) {
	w := NewWaypoint("default", "waypoint", nil)
	var seen []*config.Waypoint
	w.BeforeInstall(func(c *config.Waypoint) {
		if w.Load() == c {
			t.Error("configuration was live before BeforeInstall saw it")
		}
		seen = append(seen, c)
	})
	for range 2 {
		if err := w.Set(&waypointapi.Waypoint{Name: "waypoint", Namespace: "default"}); err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != w.Load() {
			t.Fatalf("BeforeInstall saw %d configurations, the last not the live one", len(seen))
		}
	}
	if err := w.Set(&waypointapi.Waypoint{Name: "other", Namespace: "default"}); err == nil || len(seen) != 2 {
		t.Errorf("a rejected configuration: err %v, BeforeInstall calls %d, want an error and 2", err, len(seen))
	}
}
