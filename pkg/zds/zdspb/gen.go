// Package zdspb holds the generated protobuf types of the node agent ⇄
// ztunnel protocol. Use package zds, not these types, unless you need the
// raw messages.
package zdspb

//go:generate protoc --go_out=. --go_opt=paths=source_relative zds.proto
