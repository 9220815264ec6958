package zds

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/zds/zdspb"
)

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []request{
		{kind: requestAdd, uid: podA.UID, workload: podA},
		{kind: requestKeep, uid: "k"},
		{kind: requestDel, uid: "d"},
		{kind: requestSnapshotSent},
	} {
		b, err := encodeRequest(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		// A request that decodes is valid and survives a round trip.
		if r.kind != requestSnapshotSent {
			if err := validUID(r.uid); err != nil {
				t.Fatalf("decoded invalid uid %q", r.uid)
			}
		}
		b2, err := encodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeRequest(b2)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v -> %+v, %v", r, r2, err)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	ok, _ := encodeAck("")
	bad, _ := encodeAck("refused")
	f.Add(ok)
	f.Add(bad)
	f.Add([]byte{0x0a})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := decodeAck(b)
		if err != nil {
			return
		}
		b2, _ := encodeAck(msg)
		if msg2, err := decodeAck(b2); err != nil || msg2 != msg {
			t.Fatalf("round trip %q -> %q, %v", msg, msg2, err)
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	h, _ := encodeHello()
	f.Add(h)
	bad, _ := proto.Marshal(&zdspb.ZdsHello{Version: 7})
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		if decodeHello(b) == nil {
			var m zdspb.ZdsHello
			if proto.Unmarshal(b, &m) != nil || m.Version != zdspb.Version_V1 {
				t.Fatalf("accepted hello %x", b)
			}
		}
	})
}
