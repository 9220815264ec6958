package inpod

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread switched into the network namespace ns, for
// work that must happen inside a pod (opening sockets, for example: a
// socket stays in the namespace it was created in). The calling
// goroutine's own namespace is unchanged when Do returns.
func Do(ns *os.File, f func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine, so a thread that cannot be switched back is
	// retired with it instead of running unrelated goroutines.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("inpod: opening current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("inpod: entering network namespace: %w", err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it exits with this goroutine.
			errc <- fmt.Errorf("inpod: leaving network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// CurrentNetNS opens the network namespace of the calling goroutine's
// thread. (/proc/self/ns/net names the main thread's, which need not be the
// same.)
func CurrentNetNS() (*os.File, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("inpod: opening current network namespace: %w", err)
	}
	return f, nil
}
