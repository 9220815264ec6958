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
