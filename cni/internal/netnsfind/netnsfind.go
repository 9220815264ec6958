// Package netnsfind finds a running pod's network namespace on the node
// from the pod's addresses, for pods the node agent did not see through CNI
// ADD (a namespace labelled after the pod started, or an agent restart).
package netnsfind

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// DefaultDirs hold the network namespaces container runtimes pin with bind
// mounts (containerd and CRI-O use /var/run/netns).
var DefaultDirs = []string{"/var/run/netns"}

// ErrNotFound reports that no network namespace holds the addresses.
var ErrNotFound = errors.New("no network namespace holds the pod's addresses")

// Finder scans for network namespaces.
type Finder struct {
	// Dirs are directories of pinned namespaces; DefaultDirs when nil.
	Dirs []string
	// ProcRoot, when set (normally "/proc"), also scans every process's
	// namespace; the agent needs the host's PID namespace for that.
	ProcRoot string
}

type nsKey struct{ dev, ino uint64 }

func key(fi os.FileInfo) (nsKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsKey{}, false
	}
	return nsKey{uint64(st.Dev), st.Ino}, true
}

// candidates lists paths of distinct network namespaces other than the
// caller's own.
func (f *Finder) candidates() []string {
	seen := map[nsKey]bool{}
	if self, err := inpod.CurrentNetNS(); err == nil {
		if fi, err := self.Stat(); err == nil {
			if k, ok := key(fi); ok {
				seen[k] = true // the node's own namespace is never a pod's
			}
		}
		self.Close()
	}
	var out []string
	add := func(p string) {
		fi, err := os.Stat(p)
		if err != nil {
			return
		}
		k, ok := key(fi)
		if !ok || seen[k] {
			return
		}
		seen[k] = true
		out = append(out, p)
	}
	dirs := f.Dirs
	if dirs == nil {
		dirs = DefaultDirs
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			add(filepath.Join(d, e.Name()))
		}
	}
	if f.ProcRoot != "" {
		entries, err := os.ReadDir(f.ProcRoot)
		if err == nil {
			for _, e := range entries {
				if _, err := strconv.Atoi(e.Name()); err == nil {
					add(filepath.Join(f.ProcRoot, e.Name(), "ns", "net"))
				}
			}
		}
	}
	return out
}

// Find returns the open network namespace (and a path it was found at)
// that has one of ips on an interface.
func (f *Finder) Find(ips []netip.Addr) (*os.File, string, error) {
	if len(ips) == 0 {
		return nil, "", fmt.Errorf("%w: the pod has no addresses", ErrNotFound)
	}
	for _, p := range f.candidates() {
		file, err := os.Open(p)
		if err != nil {
			continue // gone since listed
		}
		ok, err := holds(file, ips)
		if err == nil && ok {
			return file, p, nil
		}
		file.Close()
	}
	return nil, "", fmt.Errorf("%w (%v)", ErrNotFound, ips)
}

// Index maps every address found on an interface of a pod namespace to a
// path of that namespace, in one scan (for checking all of a node's pods).
func (f *Finder) Index() map[netip.Addr]string {
	idx := map[netip.Addr]string{}
	for _, p := range f.candidates() {
		file, err := os.Open(p)
		if err != nil {
			continue
		}
		addrs, err := addresses(file)
		file.Close()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if !a.IsLoopback() && !a.IsLinkLocalUnicast() {
				idx[a] = p
			}
		}
	}
	return idx
}

// Open opens the namespace that holds one of ips according to idx.
func Open(idx map[netip.Addr]string, ips []netip.Addr) (*os.File, string, error) {
	for _, ip := range ips {
		p, ok := idx[ip.Unmap()]
		if !ok {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if ok, err := holds(f, ips); err == nil && ok {
			return f, p, nil
		}
		f.Close()
	}
	return nil, "", fmt.Errorf("%w (%v)", ErrNotFound, ips)
}

// Holds reports whether the namespace ns has one of ips on an interface.
func Holds(ns *os.File, ips []netip.Addr) (bool, error) { return holds(ns, ips) }

func holds(ns *os.File, ips []netip.Addr) (bool, error) {
	addrs, err := addresses(ns)
	if err != nil {
		return false, err
	}
	for _, got := range addrs {
		for _, ip := range ips {
			if got == ip.Unmap() {
				return true, nil
			}
		}
	}
	return false, nil
}

func addresses(ns *os.File) ([]netip.Addr, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	list, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(list))
	for _, a := range list {
		if got, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, got.Unmap())
		}
	}
	return out, nil
}
