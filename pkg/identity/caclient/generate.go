package caclient

//go:generate protoc -I proto --go_out=../.. --go_opt=module=github.com/skiffmesh/skiff/pkg --go-grpc_out=../.. --go-grpc_opt=module=github.com/skiffmesh/skiff/pkg proto/skiff/ca/ca.proto
