package xds

// The .proto files are Skiff's own; `make generate` runs this with protoc,
// protoc-gen-go and protoc-gen-go-grpc on PATH.
//go:generate protoc -I proto --go_out=.. --go_opt=module=github.com/skiffmesh/skiff/pkg proto/skiff/xds/workload.proto proto/skiff/xds/authorization.proto proto/skiff/xds/waypoint.proto proto/skiff/xds/discovery.proto
