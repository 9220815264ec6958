package netnsfind

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

func TestFind(t *testing.T) {
	inpodtest.RequireRoot(t)
	a := inpodtest.NewNetNS(t, "skt-fa-")
	b := inpodtest.NewNetNS(t, "skt-fb-")
	inpodtest.Veth(t, a, "eth0", netip.MustParsePrefix("10.77.0.2/24"), b, "eth0", netip.MustParsePrefix("10.77.0.3/24"))

	f := &Finder{Dirs: []string{inpodtest.NetNSDir}, ProcRoot: "/proc"}
	file, path, err := f.Find([]netip.Addr{netip.MustParseAddr("fd00::9"), netip.MustParseAddr("10.77.0.3")})
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if path != b.Path {
		t.Fatalf("found %s, want %s", path, b.Path)
	}
	same, err := sameFile(file, b.File)
	if err != nil || !same {
		t.Fatalf("found a different namespace (%v)", err)
	}
	if _, _, err := f.Find([]netip.Addr{netip.MustParseAddr("10.77.0.99")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent address: %v", err)
	}
	if _, _, err := f.Find(nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no addresses: %v", err)
	}

	idx := f.Index()
	if idx[netip.MustParseAddr("10.77.0.2")] != a.Path || idx[netip.MustParseAddr("10.77.0.3")] != b.Path {
		t.Fatalf("index %v", idx)
	}
	file2, path2, err := Open(idx, []netip.Addr{netip.MustParseAddr("10.77.0.2")})
	if err != nil || path2 != a.Path {
		t.Fatalf("Open from index: %s, %v", path2, err)
	}
	file2.Close()
	if _, _, err := Open(idx, []netip.Addr{netip.MustParseAddr("10.77.0.99")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of an absent address: %v", err)
	}
}

func sameFile(a, b *os.File) (bool, error) {
	fa, err := a.Stat()
	if err != nil {
		return false, err
	}
	fb, err := b.Stat()
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
