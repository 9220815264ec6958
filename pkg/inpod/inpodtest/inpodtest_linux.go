// Package inpodtest creates real network namespaces and veth pairs for
// tests of in-pod redirection. Every helper registers its cleanup with the
// test. Tests using it need root; call RequireRoot first.
package inpodtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// NetNSDir is where named network namespaces live (as with `ip netns add`).
const NetNSDir = "/var/run/netns"

// RequireRoot skips the test unless it runs as root, which network
// namespaces and nftables need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and nftables rules")
	}
}

// RandName returns prefix followed by 8 random hex digits.
func RandName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NetNS is a named network namespace.
type NetNS struct {
	Name string
	Path string
	// File is the open namespace, for inpod.Rules and inpod.Do.
	File *os.File
}

// NewNetNS creates a named network namespace (bind-mounted under NetNSDir,
// as `ip netns add` does) with lo up, removed when the test ends.
func NewNetNS(t testing.TB, prefix string) *NetNS {
	t.Helper()
	return NewNetNSIn(t, NetNSDir, prefix)
}

// NewNetNSIn is NewNetNS with the namespace pinned in dir instead of
// NetNSDir, so a test can scan a directory holding only its own.
func NewNetNSIn(t testing.TB, dir, prefix string) *NetNS {
	t.Helper()
	ns, err := CreateNetNSIn(dir, RandName(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("deleting netns %s: %v", ns.Name, err)
		}
	})
	return ns
}

// CreateNetNS creates the named network namespace name with lo up.
func CreateNetNS(name string) (*NetNS, error) { return CreateNetNSIn(NetNSDir, name) }

// CreateNetNSIn creates the network namespace name pinned in dir.
func CreateNetNSIn(dir, name string) (*NetNS, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		// Switch the thread back so it can serve other goroutines; if that
		// fails it stays locked and exits with this goroutine.
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("returning to the original namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		if merr != nil {
			errc <- fmt.Errorf("bind-mounting netns: %w", merr)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	ns := &NetNS{Name: name, Path: path, File: file}
	if err := ns.netlink(func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	}); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// Delete unmounts and removes the namespace.
func (ns *NetNS) Delete() error {
	ns.File.Close()
	var errs []error
	if err := unix.Unmount(ns.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, err)
	}
	if err := os.Remove(ns.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Do runs f inside the namespace.
func (ns *NetNS) Do(f func() error) error { return inpod.Do(ns.File, f) }

func (ns *NetNS) netlink(f func(*netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.File.Fd()))
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

// Veth connects a and b with a veth pair named ifA (in a) and ifB (in b),
// addressed aAddr and bAddr (prefixes), both up.
func Veth(t testing.TB, a *NetNS, ifA string, aAddr netip.Prefix, b *NetNS, ifB string, bAddr netip.Prefix) {
	t.Helper()
	err := a.netlink(func(h *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = ifA
		veth := &netlink.Veth{LinkAttrs: la, PeerName: ifB, PeerNamespace: netlink.NsFd(int(b.File.Fd()))}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth %s/%s: %w", ifA, ifB, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		ns   *NetNS
		name string
		addr netip.Prefix
	}{{a, ifA, aAddr}, {b, ifB, bAddr}} {
		if err := side.ns.netlink(func(h *netlink.Handle) error {
			link, err := h.LinkByName(side.name)
			if err != nil {
				return err
			}
			if side.addr.IsValid() {
				addr, err := netlink.ParseAddr(side.addr.String())
				if err != nil {
					return err
				}
				if err := h.AddrAdd(link, addr); err != nil {
					return fmt.Errorf("adding %s to %s: %w", side.addr, side.name, err)
				}
			}
			return h.LinkSetUp(link)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// AddAddr adds addr (a prefix) to the link dev in ns.
func AddAddr(t testing.TB, ns *NetNS, dev string, addr netip.Prefix) {
	t.Helper()
	if err := ns.netlink(func(h *netlink.Handle) error {
		link, err := h.LinkByName(dev)
		if err != nil {
			return err
		}
		a, err := netlink.ParseAddr(addr.String())
		if err != nil {
			return err
		}
		return h.AddrAdd(link, a)
	}); err != nil {
		t.Fatal(err)
	}
}

// DefaultRoute routes everything in ns via gw.
func DefaultRoute(t testing.TB, ns *NetNS, gw netip.Addr) {
	t.Helper()
	if err := ns.netlink(func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Gw: gw.AsSlice()})
	}); err != nil {
		t.Fatalf("default route via %s: %v", gw, err)
	}
}

// Self returns the test process's own network namespace (the "host" of
// the namespaces a test creates). It is closed, never deleted, at cleanup.
func Self(t testing.TB) *NetNS {
	t.Helper()
	f, err := inpod.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &NetNS{Name: "self", File: f}
}
