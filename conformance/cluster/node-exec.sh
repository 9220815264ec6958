#!/usr/bin/env bash
# Runs a command on a node of the local cluster: inside that node's network
# and mount namespaces, where /run, /var/lib/kubelet, /etc/cni/net.d,
# /opt/cni/bin, ... are the node's own.
#   conformance/cluster/node-exec.sh 1 ip addr
#   conformance/cluster/node-exec.sh 2 ctr -n k8s.io containers ls
# With SKIFF_NODE_CGROUP=1 the command also joins the node's system cgroup
# (up.sh starts the node daemons that way, so down.sh finds every process).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
[[ $# -ge 2 ]] || die "usage: $0 NODE-NUMBER COMMAND [ARG...]"
i="$1"
shift
anchor_pidfile="$SKIFF_STATE/pids/anchor-node$i"
[[ -f "$anchor_pidfile" ]] || die "node $i is not running (no $anchor_pidfile)"
anchor="$(cat "$anchor_pidfile")"
[[ -d "/proc/$anchor" ]] || die "node $i anchor process $anchor is gone; run down.sh and up.sh"
if [[ "${SKIFF_NODE_CGROUP:-}" == 1 ]]; then
	while read -r _ mnt fstype _; do
		[[ "$fstype" == cgroup ]] || continue
		echo $$ >"$mnt/$(node_name "$i")/system/cgroup.procs"
	done </proc/self/mounts
fi
exec nsenter --target "$anchor" --mount --net -- "$@"
