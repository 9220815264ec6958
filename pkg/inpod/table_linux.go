package inpod

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrForeignTable is wrapped by the errors Install and Remove return when
// TableName exists but another program created it: it carries the nftables
// owner or persist flag, which Skiff never sets. Such a table is neither
// written into nor deleted; its creator has to remove it.
var ErrForeignTable = errors.New("inpod: nftables table was not created by Skiff")

// Table flags and attributes (linux/netfilter/nf_tables.h) that neither
// x/sys nor the nftables library name.
const (
	// tableFlagOwner: only the netlink socket that created the table may
	// change or delete it, and the table goes when that socket closes.
	tableFlagOwner = 0x2
	// tableFlagPersist: with tableFlagOwner, the table stays (orphaned)
	// after the owning socket closes, for its creator to reclaim (Linux 6.9).
	tableFlagPersist = 0x4
	// nftaTableOwner is the owning socket's netlink port ID.
	nftaTableOwner = 7
)

// tableInfo is what the kernel reports about TableName.
type tableInfo struct {
	flags uint32
	owner uint32 // netlink port ID of the owning socket, 0 when none
}

func (t *tableInfo) foreign() bool { return t.flags&(tableFlagOwner|tableFlagPersist) != 0 }

// refuse returns an error wrapping ErrForeignTable, naming the table and
// the flags that make it another program's, or nil for Skiff's own table.
func (t *tableInfo) refuse(op string) error {
	var why string
	switch {
	case t.flags&tableFlagOwner != 0:
		why = fmt.Sprintf("it has the owner flag (held by netlink port %d): only the program that created it may change or delete it", t.owner)
		if t.flags&tableFlagPersist != 0 {
			why = fmt.Sprintf("it has the owner and persist flags (held by netlink port %d): only the program that created it may change or delete it", t.owner)
		}
	case t.flags&tableFlagPersist != 0:
		why = "it has the persist flag: another program created it and left it behind for itself to reclaim"
	default:
		return nil
	}
	return fmt.Errorf("%w: refusing to %s table inet %s: %s", ErrForeignTable, op, TableName, why)
}

// lookupTable returns the kernel's view of the inet table TableName in ns,
// or nil when it does not exist. It asks the kernel directly: the nftables
// library reads a table's flags in host byte order, where the kernel sends
// them big-endian.
func lookupTable(ns *os.File) (*tableInfo, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(ns.Fd())})
	if err != nil {
		return nil, fmt.Errorf("inpod: nftables: %w", err)
	}
	defer c.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(TableName + "\x00")},
	})
	if err != nil {
		return nil, fmt.Errorf("inpod: listing nftables table: %w", err)
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		// struct nfgenmsg: family, version, resource ID.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inpod: listing nftables table: %w", err)
	}
	for _, m := range msgs {
		name, t, err := parseTable(m.Data)
		if err != nil {
			return nil, err
		}
		if name == TableName {
			return &t, nil
		}
	}
	return nil, nil
}

// parseTable decodes a NFT_MSG_NEWTABLE message body (nfgenmsg, then
// attributes; integers big-endian).
func parseTable(data []byte) (name string, t tableInfo, err error) {
	if len(data) < 4 {
		return "", t, errors.New("inpod: decoding nftables table: short message")
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return "", t, fmt.Errorf("inpod: decoding nftables table: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_NAME:
			name = ad.String()
		case unix.NFTA_TABLE_FLAGS:
			t.flags = ad.Uint32()
		case nftaTableOwner:
			t.owner = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return "", t, fmt.Errorf("inpod: decoding nftables table: %w", err)
	}
	return name, t, nil
}

// explainFlush turns a transaction the kernel refused because another
// program created TableName meanwhile (EPERM for an owned table,
// EOPNOTSUPP for a persistent one) into the ErrForeignTable error.
func explainFlush(ns *os.File, op string, err error) error {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	if t, lerr := lookupTable(ns); lerr == nil && t != nil {
		if ferr := t.refuse(op); ferr != nil {
			return ferr
		}
	}
	return err
}
