package telemetry

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
)

// Istio's label names.
const (
	LabelReporter                    = "reporter"
	LabelSourceWorkload              = "source_workload"
	LabelSourceWorkloadNamespace     = "source_workload_namespace"
	LabelSourcePrincipal             = "source_principal"
	LabelSourceApp                   = "source_app"
	LabelSourceVersion               = "source_version"
	LabelSourceCluster               = "source_cluster"
	LabelDestinationService          = "destination_service"
	LabelDestinationServiceName      = "destination_service_name"
	LabelDestinationServiceNamespace = "destination_service_namespace"
	LabelDestinationWorkload         = "destination_workload"
	LabelDestinationWorkloadNS       = "destination_workload_namespace"
	LabelDestinationPrincipal        = "destination_principal"
	LabelDestinationApp              = "destination_app"
	LabelDestinationVersion          = "destination_version"
	LabelDestinationCluster          = "destination_cluster"
	LabelRequestProtocol             = "request_protocol"
	LabelResponseCode                = "response_code"
	LabelResponseFlags               = "response_flags"
	LabelConnectionSecurityPolicy    = "connection_security_policy"
	LabelGRPCResponseStatus          = "grpc_response_status"
)

// Values Istio uses for unknown or absent labels.
const (
	Unknown       = "unknown"
	NoFlags       = "-"
	MutualTLS     = "mutual_tls"
	ReporterSrc   = "source"
	ReporterDst   = "destination"
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolGRPC  = "grpc"
	FlagDenied    = "DENY"    // ztunnel: refused by authorization policy
	FlagConnect   = "CONNECT" // ztunnel: upstream connection failure
	FlagNoHealthy = "UH"      // no healthy upstream
)

// ReporterWaypoint is the reporter of a waypoint's metrics. Istio's proxy
// reports "waypoint" for a listener configured as a server gateway, which
// is how Istio configures its ambient waypoints; dashboards select a
// waypoint's series by it.
const ReporterWaypoint = "waypoint"

// Peer describes one end of a connection or request.
type Peer struct {
	Workload  string
	Namespace string
	// Principal is the SPIFFE ID ("spiffe://td/ns/x/sa/y").
	Principal string
	// App and Version are the canonical service name and revision.
	App, Version string
	Cluster      string
}

// Labels are the labels of Istio's standard metrics. Empty fields are
// reported as Unknown (ResponseFlags as NoFlags), as Istio does.
type Labels struct {
	// Reporter is ReporterSrc for the client-side proxy, ReporterDst for
	// the server side and ReporterWaypoint for a waypoint.
	Reporter    string
	Source      Peer
	Destination Peer
	// DestinationService is the service hostname; Name and Namespace are
	// its parts.
	DestinationService          string
	DestinationServiceName      string
	DestinationServiceNamespace string
	RequestProtocol             string
	// ResponseCode is set for requests only (RequestMetrics): the HTTP
	// status in decimal, "0" when no response was sent, as Istio reports.
	ResponseCode string
	// GRPCResponseStatus is the gRPC status code of a gRPC request in
	// decimal (see GRPCStatus), and empty for any other request or when the
	// response carried no grpc-status. Like Istio, Set reports it on every
	// request label set, empty or not, and never on TCP ones.
	GRPCResponseStatus string
	// ResponseFlags explains a failure (FlagDenied, FlagConnect, ...).
	ResponseFlags string
	// SecurityPolicy is MutualTLS when the connection carried mTLS.
	SecurityPolicy string
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Set converts l to the attribute set the metrics record with. It costs a
// few kilobytes and microseconds: compute it once per connection, and for
// requests go through an AttributeCache.
func (l Labels) Set() attribute.Set {
	// Room for the request labels up front: growing the slice would copy
	// it.
	kvs := make([]attribute.KeyValue, 0, 21)
	kvs = append(kvs,
		attribute.String(LabelReporter, or(l.Reporter, Unknown)),
		attribute.String(LabelSourceWorkload, or(l.Source.Workload, Unknown)),
		attribute.String(LabelSourceWorkloadNamespace, or(l.Source.Namespace, Unknown)),
		attribute.String(LabelSourcePrincipal, or(l.Source.Principal, Unknown)),
		attribute.String(LabelSourceApp, or(l.Source.App, Unknown)),
		attribute.String(LabelSourceVersion, or(l.Source.Version, Unknown)),
		attribute.String(LabelSourceCluster, or(l.Source.Cluster, Unknown)),
		attribute.String(LabelDestinationService, or(l.DestinationService, Unknown)),
		attribute.String(LabelDestinationServiceName, or(l.DestinationServiceName, Unknown)),
		attribute.String(LabelDestinationServiceNamespace, or(l.DestinationServiceNamespace, Unknown)),
		attribute.String(LabelDestinationWorkload, or(l.Destination.Workload, Unknown)),
		attribute.String(LabelDestinationWorkloadNS, or(l.Destination.Namespace, Unknown)),
		attribute.String(LabelDestinationPrincipal, or(l.Destination.Principal, Unknown)),
		attribute.String(LabelDestinationApp, or(l.Destination.App, Unknown)),
		attribute.String(LabelDestinationVersion, or(l.Destination.Version, Unknown)),
		attribute.String(LabelDestinationCluster, or(l.Destination.Cluster, Unknown)),
		attribute.String(LabelRequestProtocol, or(l.RequestProtocol, Unknown)),
		attribute.String(LabelResponseFlags, or(l.ResponseFlags, NoFlags)),
		attribute.String(LabelConnectionSecurityPolicy, or(l.SecurityPolicy, Unknown)),
	)
	if l.ResponseCode != "" {
		kvs = append(kvs,
			attribute.String(LabelResponseCode, l.ResponseCode),
			attribute.String(LabelGRPCResponseStatus, l.GRPCResponseStatus))
	}
	return attribute.NewSet(kvs...)
}

// GRPCStatus formats a gRPC status code for Labels.GRPCResponseStatus:
// the number in decimal ("0", "14"), as Istio's proxy reports it, not the
// code's name.
func GRPCStatus(code uint32) string { return strconv.FormatUint(uint64(code), 10) }
