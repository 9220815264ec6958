package telemetry

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// labelMap turns an attribute set into label name → value.
func labelMap(s attribute.Set) map[string]string {
	m := make(map[string]string, s.Len())
	for _, kv := range s.ToSlice() {
		m[string(kv.Key)] = kv.Value.AsString()
	}
	return m
}

func TestLabelsSet(t *testing.T) {
	waypoint := Labels{
		Reporter:                    ReporterWaypoint,
		Source:                      Peer{Workload: "sleep", Namespace: "a", Principal: "spiffe://cluster.local/ns/a/sa/sleep", App: "sleep", Version: "v1", Cluster: "c1"},
		Destination:                 Peer{Workload: "echo", Namespace: "b", Principal: "spiffe://cluster.local/ns/b/sa/echo", App: "echo", Version: "v2", Cluster: "c1"},
		DestinationService:          "echo.b.svc.cluster.local",
		DestinationServiceName:      "echo",
		DestinationServiceNamespace: "b",
		RequestProtocol:             ProtocolGRPC,
		ResponseCode:                "200",
		GRPCResponseStatus:          GRPCStatus(14),
		SecurityPolicy:              MutualTLS,
	}
	full := map[string]string{
		"reporter":                       "waypoint",
		"source_workload":                "sleep",
		"source_workload_namespace":      "a",
		"source_principal":               "spiffe://cluster.local/ns/a/sa/sleep",
		"source_app":                     "sleep",
		"source_version":                 "v1",
		"source_cluster":                 "c1",
		"destination_service":            "echo.b.svc.cluster.local",
		"destination_service_name":       "echo",
		"destination_service_namespace":  "b",
		"destination_workload":           "echo",
		"destination_workload_namespace": "b",
		"destination_principal":          "spiffe://cluster.local/ns/b/sa/echo",
		"destination_app":                "echo",
		"destination_version":            "v2",
		"destination_cluster":            "c1",
		"request_protocol":               "grpc",
		"response_code":                  "200",
		"grpc_response_status":           "14",
		"response_flags":                 "-",
		"connection_security_policy":     "mutual_tls",
	}
	with := func(base map[string]string, edits map[string]string) map[string]string {
		m := make(map[string]string, len(base))
		for k, v := range base {
			m[k] = v
		}
		for k, v := range edits {
			if v == "<absent>" {
				delete(m, k)
				continue
			}
			m[k] = v
		}
		return m
	}
	unknowns := map[string]string{}
	for k := range full {
		unknowns[k] = Unknown
	}
	unknowns["response_flags"] = NoFlags
	delete(unknowns, "response_code")
	delete(unknowns, "grpc_response_status")

	http := waypoint
	http.RequestProtocol, http.GRPCResponseStatus, http.ResponseFlags = ProtocolHTTP, "", "UF"
	tcp := waypoint
	tcp.RequestProtocol, tcp.ResponseCode, tcp.GRPCResponseStatus = ProtocolTCP, "", ""

	for _, tc := range []struct {
		name string
		l    Labels
		want map[string]string
	}{
		{"gRPC request at a waypoint", waypoint, full},
		{"HTTP request reports an empty gRPC status, as Istio does", http,
			with(full, map[string]string{"request_protocol": "http", "grpc_response_status": "", "response_flags": "UF"})},
		{"TCP has neither response code nor gRPC status", tcp,
			with(full, map[string]string{"request_protocol": "tcp", "response_code": "<absent>", "grpc_response_status": "<absent>"})},
		{"empty labels are unknown", Labels{}, unknowns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := labelMap(tc.l.Set())
			if len(got) != len(tc.want) {
				t.Errorf("%d labels, want %d: %v", len(got), len(tc.want), got)
			}
			for k, want := range tc.want {
				if v, ok := got[k]; !ok || v != want {
					t.Errorf("%s = %q (present %v), want %q", k, v, ok, want)
				}
			}
		})
	}
}

func TestGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		code uint32
		want string
	}{{0, "0"}, {14, "14"}, {16, "16"}, {4294967295, "4294967295"}} {
		if got := GRPCStatus(tc.code); got != tc.want {
			t.Errorf("GRPCStatus(%d) = %q, want %q", tc.code, got, tc.want)
		}
	}
}

// FuzzLabelsSet checks, whatever the values, that a label set has exactly
// Istio's labels, that only grpc_response_status may be empty, and that
// request values are reported as given.
func FuzzLabelsSet(f *testing.F) {
	f.Add("waypoint", "sleep", "spiffe://td/ns/a/sa/b", "echo.b.svc.cluster.local", "200", "14", "UF")
	f.Add("", "", "", "", "", "", "")
	f.Add("source", "x\"y", "\n", "a{b}", "0", "", "-")
	f.Fuzz(func(t *testing.T, reporter, workload, principal, service, code, grpcStatus, flags string) {
		l := Labels{
			Reporter:           reporter,
			Source:             Peer{Workload: workload, Principal: principal},
			Destination:        Peer{Workload: workload},
			DestinationService: service,
			ResponseCode:       code,
			GRPCResponseStatus: grpcStatus,
			ResponseFlags:      flags,
		}
		set := l.Set()
		m := labelMap(set)
		want := 19
		if code != "" {
			want = 21
		}
		if len(m) != want {
			t.Fatalf("%d labels, want %d: %v", len(m), want, m)
		}
		for k, v := range m {
			if v == "" && k != LabelGRPCResponseStatus {
				t.Errorf("label %s is empty", k)
			}
		}
		if code != "" && (m[LabelResponseCode] != code || m[LabelGRPCResponseStatus] != grpcStatus) {
			t.Errorf("response_code = %q, grpc_response_status = %q, want %q, %q",
				m[LabelResponseCode], m[LabelGRPCResponseStatus], code, grpcStatus)
		}
	})
}
