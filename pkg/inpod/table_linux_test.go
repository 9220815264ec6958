package inpod

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func tableMsg(tb testing.TB, name string, flags, owner uint32) []byte {
	tb.Helper()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(name + "\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)},
		{Type: nftaTableOwner, Data: binary.BigEndian.AppendUint32(nil, owner)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)
}

func TestParseTable(t *testing.T) {
	name, info, err := parseTable(tableMsg(t, TableName, tableFlagOwner|tableFlagPersist, 4242))
	if err != nil || name != TableName || info.flags != tableFlagOwner|tableFlagPersist || info.owner != 4242 {
		t.Fatalf("parseTable = %q %+v %v", name, info, err)
	}
	for _, bad := range [][]byte{nil, {2, 0}, {2, 0, 0, 0, 9, 0, 1}} {
		if _, _, err := parseTable(bad); err == nil {
			t.Errorf("parseTable(%x) accepted a malformed message", bad)
		}
	}
}

func FuzzParseTable(f *testing.F) {
	f.Add(tableMsg(f, TableName, tableFlagOwner, 1))
	f.Add([]byte{2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		name, info, err := parseTable(data)
		if err != nil {
			return
		}
		if (info.refuse("delete") != nil) != info.foreign() {
			t.Fatalf("table %q %+v: refuse and foreign disagree", name, info)
		}
	})
}
