package inpodtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// Table flags (linux/netfilter/nf_tables.h) the nftables library cannot set.
const (
	// TableOwner makes a table changeable only by the netlink socket that
	// created it; the table goes when that socket closes.
	TableOwner = 0x2
	// TablePersist, with TableOwner, keeps the table (orphaned) after the
	// socket closes (Linux 6.9).
	TablePersist = 0x4
)

// ForeignTable replaces the inet table inpod.TableName in ns with one
// created, as another program would, with flags (TableOwner, TablePersist)
// over a netlink socket of its own. release closes that socket: an owned
// table goes with it, a persistent one stays orphaned. The test skips when
// the kernel lacks the flags.
func ForeignTable(t testing.TB, ns *NetNS, flags uint32) (release func()) {
	t.Helper()
	nc, err := nftables.New(nftables.WithNetNSFd(int(ns.File.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: inpod.TableName, Family: nftables.TableFamilyINet}
	nc.AddTable(table) // so the delete cannot fail on a missing table
	nc.DelTable(table)
	if err := nc.Flush(); err != nil {
		t.Fatalf("removing the agent's table: %v", err)
	}
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: int(ns.File.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	genmsg := func(family byte, resID uint16) []byte {
		b := []byte{family, unix.NFNETLINK_V0, 0, 0}
		binary.BigEndian.PutUint16(b[2:], resID)
		return b
	}
	attrs, err := mdnetlink.MarshalAttributes([]mdnetlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(inpod.TableName + "\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []mdnetlink.Message{
		{Header: mdnetlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: mdnetlink.Request}, Data: genmsg(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: mdnetlink.Request | mdnetlink.Acknowledge | mdnetlink.Create}, Data: append(genmsg(unix.NFPROTO_INET, 0), attrs...)},
		{Header: mdnetlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: mdnetlink.Request}, Data: genmsg(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		c.Close()
		t.Fatal(err)
	}
	if _, err := c.Receive(); err != nil {
		c.Close()
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			t.Skipf("skipping: this kernel cannot create an nftables table with flags %#x: %v", flags, err)
		}
		t.Fatalf("creating the foreign table: %v", err)
	}
	var once sync.Once
	release = func() { once.Do(func() { c.Close() }) }
	t.Cleanup(release)
	return release
}

// DropUDPTable is the nftables table DropUDP adds.
const DropUDPTable = "skiff-test-drop-udp"

// DropUDP drops UDP to port forwarded through the network namespace ns
// (a node between two others), as a firewall that blocks QUIC would; the
// rule goes with the test, even if the caller closes ns first: it keeps a
// namespace handle of its own, since a rule left behind would go on
// dropping QUIC on a cluster long after the test.
func DropUDP(t testing.TB, ns *os.File, port uint16) {
	t.Helper()
	fd, err := unix.Dup(int(ns.Fd()))
	if err != nil {
		t.Fatalf("duplicating the namespace handle: %v", err)
	}
	own := os.NewFile(uintptr(fd), ns.Name())
	nc, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		own.Close()
		t.Fatal(err)
	}
	table := &nftables.Table{Name: DropUDPTable, Family: nftables.TableFamilyINet}
	// A table left by a test that crashed is replaced.
	nc.AddTable(table)
	nc.DelTable(table)
	table = nc.AddTable(table)
	chain := nc.AddChain(&nftables.Chain{
		Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	nc.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := nc.Flush(); err != nil {
		own.Close()
		t.Fatalf("adding the UDP drop rule: %v", err)
	}
	t.Cleanup(func() {
		defer own.Close()
		nc.DelTable(table)
		if err := nc.Flush(); err != nil {
			t.Errorf("removing the UDP drop rule (table %s): %v", DropUDPTable, err)
		}
	})
}

// ClearDropUDP removes a DropUDP rule that a test killed before its
// cleanup left in the network namespace ns, if there is one.
func ClearDropUDP(ns *os.File) error {
	nc, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return err
	}
	table := &nftables.Table{Name: DropUDPTable, Family: nftables.TableFamilyINet}
	nc.AddTable(table)
	nc.DelTable(table)
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("removing table %s: %w", DropUDPTable, err)
	}
	return nil
}
