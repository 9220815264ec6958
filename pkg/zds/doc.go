// Package zds implements the protocol between the node agent and ztunnel
// (Istio's "ZDS"), which hands each enrolled pod's network namespace to
// ztunnel so that ztunnel can open its listeners inside the pod.
//
// Wire format, compatible with Istio's node agent and ztunnel:
//
//   - A unix SOCK_SEQPACKET socket; the node agent listens (default
//     DefaultPath) and ztunnel connects. One protobuf message per packet
//     (package zdspb; message shapes and field numbers as Istio's zds.proto).
//   - ztunnel first sends ZdsHello{version: V1}.
//   - The node agent then replays its whole state: AddWorkload for every pod
//     it has a network namespace for (the namespace's file descriptor travels
//     in the same packet as SCM_RIGHTS ancillary data), KeepWorkload for pods
//     it knows but has no namespace for, then SnapshotSent. ztunnel drops
//     every workload it holds that the replay did not mention.
//   - Afterwards the node agent sends AddWorkload and DelWorkload as pods come
//     and go.
//   - ztunnel answers every WorkloadRequest with one WorkloadResponse{Ack};
//     a non-empty Ack.error reports a failure. The node agent sends the next
//     request only after the previous one was acked.
//
// The node agent side is Server; the ztunnel side is Run with a Handler.
package zds
