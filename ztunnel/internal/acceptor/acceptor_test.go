package acceptor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// echoName answers each connection with name and the connection's
// addresses as the server sees them.
func echoName(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		defer c.Close()
		fmt.Fprintf(c, "%s %s %s", name, c.LocalAddr(), c.RemoteAddr())
	}
}

func TestAcceptsOnEveryListener(t *testing.T) {
	a := New(nil)
	defer a.Close()
	const n = 20
	lns := make([]*net.TCPListener, n)
	for i := range lns {
		lns[i] = listen(t)
		if _, err := a.Add(lns[i], echoName(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Listeners(); got != n {
		t.Fatalf("Listeners() = %d, want %d", got, n)
	}
	// Several connections per listener, concurrently.
	var wg sync.WaitGroup
	errs := make(chan error, n*5)
	for i, ln := range lns {
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				b, err := io.ReadAll(c)
				want := fmt.Sprintf("%d %s %s", i, ln.Addr(), c.LocalAddr())
				if err != nil || string(b) != want {
					errs <- fmt.Errorf("got %q, %v; want %q", b, err, want)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRemoveAndClose(t *testing.T) {
	a := New(nil)
	ln1, ln2 := listen(t), listen(t)
	remove1, err := a.Add(ln1, echoName("one"))
	if err != nil {
		t.Fatal(err)
	}
	remove2, err := a.Add(ln2, echoName("two"))
	if err != nil {
		t.Fatal(err)
	}
	remove1()
	remove1() // idempotent
	ln1.Close()
	if got := a.Listeners(); got != 1 {
		t.Fatalf("Listeners() = %d after a removal, want 1", got)
	}
	// The other listener still works.
	c, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if len(b) < 3 || string(b[:3]) != "two" {
		t.Fatalf("got %q", b)
	}
	// The last removal ends the goroutine; a new listener starts another.
	remove2()
	ln3 := listen(t)
	if _, err := a.Add(ln3, echoName("three")); err != nil {
		t.Fatal(err)
	}
	c, err = net.Dial("tcp", ln3.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(c)
	c.Close()
	if len(b) < 5 || string(b[:5]) != "three" {
		t.Fatalf("got %q", b)
	}
	a.Close()
	if _, err := a.Add(listen(t), echoName("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
}

// TestListenerClosedUnderneath: a listener closed without removal (its
// owner's mistake) is dropped quietly and the others keep working.
func TestListenerClosedUnderneath(t *testing.T) {
	a := New(nil)
	defer a.Close()
	ln1, ln2 := listen(t), listen(t)
	if _, err := a.Add(ln1, echoName("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Add(ln2, echoName("two")); err != nil {
		t.Fatal(err)
	}
	ln1.Close()
	c, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); len(b) < 3 || string(b[:3]) != "two" {
		t.Fatalf("got %q", b)
	}
}

// TestAwaitReadable: a socket awaited is handed back once, at its first
// datagram, which stays queued for its reader; a wait cancelled first
// never calls back.
func TestAwaitReadable(t *testing.T) {
	a := New(nil)
	defer a.Close()
	udp := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	send := func(to *net.UDPConn, msg string) {
		t.Helper()
		c, err := net.DialUDP("udp", nil, to.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	await := func(c *net.UDPConn, ready func()) func() {
		t.Helper()
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		cancel, err := a.AwaitReadable(rc, ready)
		if err != nil {
			t.Fatal(err)
		}
		return cancel
	}

	used, cancelled := udp(), udp()
	calls := make(chan string, 4)
	await(used, func() { calls <- "used" })
	cancel := await(cancelled, func() { calls <- "cancelled" })
	// A listener of the same acceptor, to know that it went round its
	// loop after the datagrams came.
	ln := listen(t)
	if _, err := a.Add(ln, echoName("tcp")); err != nil {
		t.Fatal(err)
	}
	if got := a.Listeners(); got != 3 {
		t.Fatalf("Listeners() = %d, want 3", got)
	}
	cancel()
	send(cancelled, "late")
	send(used, "first")
	if got := <-calls; got != "used" {
		t.Fatalf("callback for the %s socket", got)
	}
	// The datagram is still there for the socket's reader.
	buf := make([]byte, 16)
	n, _, err := used.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("read %q, %v after the callback; want the first datagram", buf[:n], err)
	}
	send(used, "second")
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(c)
	c.Close()
	select {
	case got := <-calls:
		t.Fatalf("another callback, for the %s socket", got)
	default:
	}
	if got := a.Listeners(); got != 1 {
		t.Fatalf("Listeners() = %d once the sockets were handed back or cancelled, want 1", got)
	}
}
