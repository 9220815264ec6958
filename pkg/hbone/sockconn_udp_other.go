//go:build !linux

package hbone

import (
	"log/slog"
	"net"
)

// tuneUDP returns pc: quic-go sizes the socket buffers itself, and
// generic receive offload is Linux's.
func tuneUDP(pc net.PacketConn, _ *slog.Logger) net.PacketConn { return pc }
