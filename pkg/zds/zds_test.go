package zds

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/zds/zdspb"
)

var (
	podA = Workload{UID: "uid-a", Name: "a", Namespace: "ns1", ServiceAccount: "sa-a"}
	podB = Workload{UID: "uid-b", Name: "b", Namespace: "ns1", ServiceAccount: "sa-b"}
	podC = Workload{UID: "uid-c", Name: "c", Namespace: "ns2", ServiceAccount: "default"}
)

func TestAddAndDelAreDeliveredWithTheNamespace(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	h := newRecorder()
	startClient(t, path, h)
	if e := h.next(t); e.op != "snapshot" {
		t.Fatalf("first event %+v, want snapshot", e)
	}
	if err := s.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !s.Connected() {
		t.Fatal("Connected() = false after WaitConnected")
	}

	ns := newNetns(t)
	if err := s.AddWorkload(t.Context(), podA, ns); err != nil {
		t.Fatalf("AddWorkload: %v", err)
	}
	e := h.next(t)
	if e.op != "add" || e.w != podA {
		t.Fatalf("got %+v, want add of %+v", e, podA)
	}
	if want := inode(t, ns); e.inode != want {
		t.Fatalf("ztunnel got netns inode %d, want %d", e.inode, want)
	}
	if err := s.DelWorkload(t.Context(), podA.UID); err != nil {
		t.Fatalf("DelWorkload: %v", err)
	}
	if e := h.next(t); e.op != "del" || e.uid != podA.UID {
		t.Fatalf("got %+v, want del %s", e, podA.UID)
	}
}

func TestRefusedAddReturnsTheAckError(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	h := newRecorder()
	h.refuse[podB.UID] = "cannot enter namespace"
	startClient(t, path, h)
	if err := s.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := s.AddWorkload(t.Context(), podB, newNetns(t))
	var ackErr *AckError
	if !errors.As(err, &ackErr) || !strings.Contains(ackErr.Message, "cannot enter namespace") {
		t.Fatalf("AddWorkload error = %v, want AckError with the handler's message", err)
	}
}

func TestPodsAddedBeforeZtunnelConnectsAreReplayed(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	if s.Connected() {
		t.Fatal("Connected() before any ztunnel")
	}
	nsA := newNetns(t)
	if err := s.AddWorkload(t.Context(), podA, nsA); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("AddWorkload without ztunnel = %v, want ErrNotConnected", err)
	}
	if err := s.AddWorkload(t.Context(), podB, nil); err != nil {
		t.Fatalf("AddWorkload(nil netns) = %v", err)
	}
	if err := s.AddWorkload(t.Context(), podC, newNetns(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatal(err)
	}
	if err := s.DelWorkload(t.Context(), podC.UID); err != nil {
		t.Fatalf("DelWorkload without ztunnel = %v, want nil", err)
	}

	h := newRecorder()
	startClient(t, path, h)
	want := []event{{op: "add", uid: podA.UID}, {op: "keep", uid: podB.UID}, {op: "snapshot"}}
	for _, w := range want {
		e := h.next(t)
		if e.op != w.op || e.uid != w.uid {
			t.Fatalf("got %+v, want %+v", e, w)
		}
		if e.op == "add" && e.inode != inode(t, nsA) {
			t.Fatalf("replayed netns inode %d, want %d", e.inode, inode(t, nsA))
		}
	}
}

func TestReconnectRemovesPodsDeletedMeanwhile(t *testing.T) {
	path := socketPath(t)
	s1, err := NewServer(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s1.Serve(ctx1) }()

	h := newRecorder()
	startClient(t, path, h)
	if e := h.next(t); e.op != "snapshot" {
		t.Fatalf("got %+v", e)
	}
	for _, w := range []Workload{podA, podB} {
		if err := s1.AddWorkload(t.Context(), w, newNetns(t)); err != nil {
			t.Fatal(err)
		}
		h.next(t)
	}

	// The node agent restarts; meanwhile podB was deleted.
	cancel1()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	s1.Close()
	// The restarted agent learns its pods before it serves.
	s2, err := NewServer(path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.AddWorkload(t.Context(), podA, newNetns(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatal(err)
	}
	serve(t, s2)
	var got []string
	for {
		e := h.next(t)
		got = append(got, e.op+" "+e.uid)
		if e.op == "snapshot" {
			break
		}
	}
	want := []string{"add uid-a", "del uid-b", "snapshot "}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after reconnect got %q, want %q", got, want)
	}
}

func TestNewZtunnelReplacesTheOld(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	if err := s.AddWorkload(t.Context(), podA, newNetns(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatal(err)
	}
	oldZ := newRecorder()
	startClient(t, path, oldZ)
	if e := oldZ.next(t); e.uid != podA.UID {
		t.Fatalf("old ztunnel got %+v", e)
	}
	oldZ.next(t) // snapshot

	newZ := newRecorder()
	startClient(t, path, newZ)
	if e := newZ.next(t); e.op != "add" || e.uid != podA.UID {
		t.Fatalf("new ztunnel got %+v, want replay of %s", e, podA.UID)
	}
	if e := newZ.next(t); e.op != "snapshot" {
		t.Fatalf("new ztunnel got %+v", e)
	}
	if err := s.AddWorkload(t.Context(), podB, newNetns(t)); err != nil {
		t.Fatal(err)
	}
	if e := newZ.next(t); e.op != "add" || e.uid != podB.UID {
		t.Fatalf("new ztunnel got %+v, want add %s", e, podB.UID)
	}
	select {
	case e := <-oldZ.events:
		t.Fatalf("replaced ztunnel still got %+v", e)
	default:
	}
}

// TestIdleZtunnelTakesOverWhenTheActiveLeaves covers a node agent that
// restarts during a ztunnel upgrade: the new ztunnel connects first, the
// old one reconnects after it and becomes active, then exits. The new one,
// idle until then, must be asked to reconnect rather than left without
// pods while the agent reports that no ztunnel is connected.
func TestIdleZtunnelTakesOverWhenTheActiveLeaves(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	if err := s.AddWorkload(t.Context(), podA, newNetns(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatal(err)
	}
	newZ := newRecorder()
	startClient(t, path, newZ)
	newZ.expect(t, "new ztunnel", "add uid-a", "snapshot ")
	if err := s.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	oldZ := newRecorder()
	stopOld := startClient(t, path, oldZ)
	oldZ.expect(t, "reconnecting old ztunnel", "add uid-a", "snapshot ")
	// Once the old ztunnel gets new pods, it is the active one.
	if err := s.AddWorkload(t.Context(), podB, newNetns(t)); err != nil {
		t.Fatal(err)
	}
	oldZ.expect(t, "old ztunnel", "add uid-b")
	stopOld()

	// The new ztunnel reconnects and gets the whole state again, in the
	// order the pods were added.
	newZ.expect(t, "new ztunnel after the old one left", "add uid-a", "add uid-b", "snapshot ")
	if err := s.AddWorkload(t.Context(), podC, newNetns(t)); err != nil {
		t.Fatal(err)
	}
	newZ.expect(t, "new ztunnel", "add uid-c")
}

// rawZtunnel is a hand-driven ztunnel connection.
func rawZtunnel(t *testing.T, path string, hello []byte) packetConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pc := packetConn{c: c}
	if err := pc.write(hello, nil); err != nil {
		t.Fatal(err)
	}
	return pc
}

func readRequest(t *testing.T, pc packetConn) (request, []*os.File) {
	t.Helper()
	b, files, err := pc.read(make([]byte, MaxMessageSize), make([]byte, oobSize))
	if err != nil {
		t.Fatalf("reading request: %v", err)
	}
	r, err := decodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	return r, files
}

func writeAck(t *testing.T, pc packetConn) {
	t.Helper()
	b, _ := encodeAck("")
	if err := pc.write(b, nil); err != nil {
		t.Fatal(err)
	}
}

func TestServerDropsMisbehavingZtunnel(t *testing.T) {
	goodHello, _ := encodeHello()
	badHello, _ := proto.Marshal(&zdspb.ZdsHello{})
	tests := []struct {
		name  string
		hello []byte
		after func(t *testing.T, pc packetConn) // before expecting EOF
	}{
		{"unsupported version", badHello, nil},
		{"garbage hello", []byte{0xff, 0xff, 0xff}, nil},
		{"ack without request", goodHello, func(t *testing.T, pc packetConn) {
			if r, _ := readRequest(t, pc); r.kind != requestSnapshotSent {
				t.Fatalf("got %v", r.kind)
			}
			writeAck(t, pc)
			writeAck(t, pc)
		}},
		{"garbage response", goodHello, func(t *testing.T, pc packetConn) {
			readRequest(t, pc)
			if err := pc.write([]byte{0x0a, 0x05, 0x01}, nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			s := startServer(t, path)
			pc := rawZtunnel(t, path, tt.hello)
			if tt.after != nil {
				tt.after(t, pc)
			}
			// The server hangs up: reads end with EOF.
			for {
				_, files, err := pc.read(make([]byte, MaxMessageSize), make([]byte, oobSize))
				closeAll(files)
				if err != nil {
					break
				}
			}
			if s.Connected() && tt.after == nil {
				t.Fatal("server reports a connection it rejected")
			}
		})
	}
}

func TestAddWithoutAckTimesOutAndDisconnects(t *testing.T) {
	path := socketPath(t)
	s := startServer(t, path)
	hello, _ := encodeHello()
	pc := rawZtunnel(t, path, hello)
	readRequest(t, pc) // snapshot-sent
	writeAck(t, pc)
	if err := s.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := s.AddWorkload(ctx, podA, newNetns(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AddWorkload to a silent ztunnel = %v, want deadline exceeded", err)
	}
	r, files := readRequest(t, pc)
	closeAll(files)
	if r.kind != requestAdd || len(files) != 1 {
		t.Fatalf("got %v with %d fds", r.kind, len(files))
	}
	if _, _, err := pc.read(make([]byte, 64), make([]byte, oobSize)); err == nil {
		t.Fatal("connection still open after the ack timed out")
	}
}

// rawNodeAgent accepts one ztunnel (Run) and hands back the connection
// after reading its hello.
func rawNodeAgent(t *testing.T, path string) packetConn {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pc := packetConn{c: c}
	b, files, err := pc.read(make([]byte, MaxMessageSize), make([]byte, oobSize))
	if err != nil || len(files) != 0 {
		t.Fatalf("reading hello: %v (%d fds)", err, len(files))
	}
	if err := decodeHello(b); err != nil {
		t.Fatal(err)
	}
	return pc
}

func readAck(t *testing.T, pc packetConn) string {
	t.Helper()
	b, files, err := pc.read(make([]byte, MaxMessageSize), make([]byte, oobSize))
	if err != nil || len(files) != 0 {
		t.Fatalf("reading ack: %v (%d fds)", err, len(files))
	}
	msg, err := decodeAck(b)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestZtunnelAcksBadRequestsWithAnError(t *testing.T) {
	enc := func(r request) []byte {
		b, err := encodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	add := enc(request{kind: requestAdd, uid: podA.UID, workload: podA})
	tests := []struct {
		name    string
		packet  []byte
		fds     int
		wantErr string // substring; "" means success
	}{
		{"garbage", []byte{0xff, 0x01}, 0, "decoding request"},
		{"add without netns", add, 0, "carried 0 file descriptors"},
		{"add with two fds", add, 2, "carried 2 file descriptors"},
		{"del with fd", enc(request{kind: requestDel, uid: "x"}), 1, "carried file descriptors"},
		{"keep with empty uid", mustMarshal(t, &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{}}}), 0, "empty workload uid"},
		{"oversized", make([]byte, MaxMessageSize+1), 0, "larger than"},
		{"valid add", add, 1, ""},
		{"keep before snapshot", enc(request{kind: requestKeep, uid: "k"}), 0, ""},
		{"snapshot", enc(request{kind: requestSnapshotSent}), 0, ""},
		{"keep after snapshot", enc(request{kind: requestKeep, uid: "k"}), 0, "after the snapshot"},
		{"second snapshot", enc(request{kind: requestSnapshotSent}), 0, "second snapshot"},
		{"del", enc(request{kind: requestDel, uid: podA.UID}), 0, ""},
	}
	path := socketPath(t)
	h := newRecorder()
	startClient(t, path, h)
	pc := rawNodeAgent(t, path)
	ns := newNetns(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fd *os.File
			if tt.fds > 0 {
				fd = ns
			}
			var err error
			if tt.fds == 2 {
				err = writeTwoFDs(pc, tt.packet, ns)
			} else {
				err = pc.write(tt.packet, fd)
			}
			if err != nil {
				t.Fatal(err)
			}
			msg := readAck(t, pc)
			if tt.wantErr == "" && msg != "" || !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("ack error %q, want %q", msg, tt.wantErr)
			}
		})
	}
	// Requests that were acked fine reached the handler, in order.
	var got []string
	for len(got) < 4 {
		e := h.next(t)
		got = append(got, e.op+" "+e.uid)
	}
	want := "add uid-a,keep k,snapshot ,del uid-a"
	if strings.Join(got, ",") != want {
		t.Fatalf("handler calls %q, want %q", got, want)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTwoFDs(pc packetConn, b []byte, f *os.File) error {
	fd := int(f.Fd())
	_, _, err := pc.c.WriteMsgUnix(b, unixRights(fd, fd), nil)
	return err
}
