//go:build !linux

package hbone

import (
	"net"
	"sync"
)

// fastConn returns c: the raw system call path exists on Linux only.
func fastConn(c net.Conn) net.Conn { return c }

// sockConn is never made off Linux; the stubs keep Splice portable.
type sockConn struct{ net.Conn }

func (c *sockConn) CloseWrite() error { return c.Conn.(closeWriter).CloseWrite() }

func (c *sockConn) tryWrite(p []byte) (int, error) { return c.Write(p) }

func (c *sockConn) readPooled(pool *sync.Pool) (*[]byte, int, error) {
	bp := pool.Get().(*[]byte)
	n, err := c.Read(*bp)
	return bp, n, err
}
