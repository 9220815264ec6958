//go:build !linux

package hbone

import "net"

// fastConn returns c: the raw system call path exists on Linux only.
func fastConn(c net.Conn) net.Conn { return c }
