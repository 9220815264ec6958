package zds

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/zds/zdspb"
)

// DefaultPath is where the node agent listens and ztunnel connects.
const DefaultPath = "/var/run/ztunnel/ztunnel.sock"

// MaxMessageSize bounds one packet. Legitimate messages are a few hundred
// bytes; anything larger is rejected rather than truncated.
const MaxMessageSize = 16 << 10

// Limits on identifying strings, from Kubernetes' own limits on names.
const (
	maxUIDLen  = 128
	maxNameLen = 253
)

var (
	// ErrNotConnected reports that no ztunnel is connected (or it went away
	// before acking). The node agent keeps the pod and replays it to the
	// next ztunnel that connects.
	ErrNotConnected = errors.New("zds: no ztunnel connected")
	// ErrProtocol reports a malformed or unexpected message.
	ErrProtocol = errors.New("zds: protocol error")
)

// AckError is ztunnel's refusal of a request: the error string of its Ack.
type AckError struct {
	Message string
}

func (e *AckError) Error() string { return "ztunnel refused: " + e.Message }

// Workload identifies a pod handed to ztunnel.
type Workload struct {
	// UID is the pod's Kubernetes UID, the key of every message.
	UID string
	// Name, Namespace and ServiceAccount are the pod's; ztunnel derives the
	// workload identity from Namespace and ServiceAccount.
	Name, Namespace, ServiceAccount string
}

func (w Workload) validate() error {
	if err := validUID(w.UID); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"name", w.Name}, {"namespace", w.Namespace}, {"service account", w.ServiceAccount},
	} {
		if len(f.v) > maxNameLen {
			return fmt.Errorf("%w: workload %s longer than %d bytes", ErrProtocol, f.name, maxNameLen)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%w: workload %s is not UTF-8", ErrProtocol, f.name)
		}
	}
	return nil
}

func validUID(uid string) error {
	switch {
	case uid == "":
		return fmt.Errorf("%w: empty workload uid", ErrProtocol)
	case len(uid) > maxUIDLen:
		return fmt.Errorf("%w: workload uid longer than %d bytes", ErrProtocol, maxUIDLen)
	case !utf8.ValidString(uid):
		return fmt.Errorf("%w: workload uid is not UTF-8", ErrProtocol)
	}
	return nil
}

// request is a decoded, validated WorkloadRequest.
type request struct {
	kind     requestKind
	uid      string
	workload Workload // for requestAdd
}

type requestKind int

const (
	requestAdd requestKind = iota + 1
	requestKeep
	requestDel
	requestSnapshotSent
)

func (k requestKind) String() string {
	switch k {
	case requestAdd:
		return "add"
	case requestKeep:
		return "keep"
	case requestDel:
		return "del"
	case requestSnapshotSent:
		return "snapshot-sent"
	}
	return "unknown"
}

// decodeRequest parses and validates one request packet.
func decodeRequest(b []byte) (request, error) {
	var m zdspb.WorkloadRequest
	if err := proto.Unmarshal(b, &m); err != nil {
		return request{}, fmt.Errorf("%w: decoding request: %v", ErrProtocol, err)
	}
	var r request
	switch p := m.Payload.(type) {
	case *zdspb.WorkloadRequest_Add:
		info := p.Add.GetWorkloadInfo()
		r = request{kind: requestAdd, uid: p.Add.GetUid(), workload: Workload{
			UID:            p.Add.GetUid(),
			Name:           info.GetName(),
			Namespace:      info.GetNamespace(),
			ServiceAccount: info.GetServiceAccount(),
		}}
		if err := r.workload.validate(); err != nil {
			return request{}, err
		}
		return r, nil
	case *zdspb.WorkloadRequest_Keep:
		r = request{kind: requestKeep, uid: p.Keep.GetUid()}
	case *zdspb.WorkloadRequest_Del:
		r = request{kind: requestDel, uid: p.Del.GetUid()}
	case *zdspb.WorkloadRequest_SnapshotSent:
		return request{kind: requestSnapshotSent}, nil
	default:
		return request{}, fmt.Errorf("%w: request without a known payload", ErrProtocol)
	}
	if err := validUID(r.uid); err != nil {
		return request{}, err
	}
	return r, nil
}

func encodeRequest(r request) ([]byte, error) {
	var m zdspb.WorkloadRequest
	switch r.kind {
	case requestAdd:
		m.Payload = &zdspb.WorkloadRequest_Add{Add: &zdspb.AddWorkload{
			Uid: r.workload.UID,
			WorkloadInfo: &zdspb.WorkloadInfo{
				Name:           r.workload.Name,
				Namespace:      r.workload.Namespace,
				ServiceAccount: r.workload.ServiceAccount,
			},
		}}
	case requestKeep:
		m.Payload = &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{Uid: r.uid}}
	case requestDel:
		m.Payload = &zdspb.WorkloadRequest_Del{Del: &zdspb.DelWorkload{Uid: r.uid}}
	case requestSnapshotSent:
		m.Payload = &zdspb.WorkloadRequest_SnapshotSent{SnapshotSent: &zdspb.SnapshotSent{}}
	default:
		return nil, fmt.Errorf("zds: encoding unknown request kind %d", r.kind)
	}
	return proto.Marshal(&m)
}

// decodeAck parses a response packet; it returns the Ack's error string.
func decodeAck(b []byte) (string, error) {
	var m zdspb.WorkloadResponse
	if err := proto.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("%w: decoding response: %v", ErrProtocol, err)
	}
	ack, ok := m.Payload.(*zdspb.WorkloadResponse_Ack)
	if !ok || ack.Ack == nil {
		return "", fmt.Errorf("%w: response is not an ack", ErrProtocol)
	}
	return ack.Ack.GetError(), nil
}

func encodeAck(errMsg string) ([]byte, error) {
	return proto.Marshal(&zdspb.WorkloadResponse{Payload: &zdspb.WorkloadResponse_Ack{Ack: &zdspb.Ack{Error: errMsg}}})
}

func decodeHello(b []byte) error {
	var m zdspb.ZdsHello
	if err := proto.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: decoding hello: %v", ErrProtocol, err)
	}
	if m.GetVersion() != zdspb.Version_V1 {
		return fmt.Errorf("%w: unsupported protocol version %v", ErrProtocol, m.GetVersion())
	}
	return nil
}

func encodeHello() ([]byte, error) {
	return proto.Marshal(&zdspb.ZdsHello{Version: zdspb.Version_V1})
}

// packetConn reads and writes whole packets, with at most one file
// descriptor attached.
type packetConn struct {
	c *net.UnixConn
}

func (p packetConn) write(b []byte, fd *os.File) error {
	var oob []byte
	if fd != nil {
		raw, err := fd.SyscallConn()
		if err != nil {
			return fmt.Errorf("zds: passing file descriptor: %w", err)
		}
		var werr error
		cerr := raw.Control(func(n uintptr) {
			_, _, werr = p.c.WriteMsgUnix(b, unix.UnixRights(int(n)), nil)
		})
		if cerr != nil {
			return fmt.Errorf("zds: passing file descriptor: %w", cerr)
		}
		if werr != nil {
			return fmt.Errorf("zds: write: %w", werr)
		}
		return nil
	}
	if _, _, err := p.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("zds: write: %w", err)
	}
	return nil
}

// read returns one packet and the descriptors that came with it; the caller
// owns them. A packet that was truncated or carried truncated ancillary data
// is reported as ErrProtocol (its descriptors already closed); the
// connection stays usable.
func (p packetConn) read(buf, oob []byte) ([]byte, []*os.File, error) {
	n, oobn, flags, _, err := p.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	files, ferr := parseRights(oob[:oobn])
	if flags&syscall.MSG_TRUNC != 0 || flags&syscall.MSG_CTRUNC != 0 || ferr != nil {
		closeAll(files)
		if ferr != nil {
			return nil, nil, ferr
		}
		return nil, nil, fmt.Errorf("%w: packet or its ancillary data larger than %d bytes", ErrProtocol, len(buf))
	}
	return buf[:n], files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing ancillary data: %v", ErrProtocol, err)
	}
	var files []*os.File
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(files)
			return nil, fmt.Errorf("%w: parsing SCM_RIGHTS: %v", ErrProtocol, err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// oobSize leaves room for a few descriptors so that a peer sending too many
// is detected (and the extra descriptors closed) instead of leaking them.
var oobSize = unix.CmsgSpace(4 * 4)
