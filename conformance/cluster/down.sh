#!/usr/bin/env bash
# Tears down the Skiff local cluster (make cluster-down): stops every process
# it started (by the PIDs recorded under /var/lib/skiff-cluster/pids, then
# whatever is left in the nodes' cgroups: container shims and containers),
# and removes the node network namespaces (with their iptables/nftables
# state), the bridge, host routes and addresses, the cgroups, the mount points
# it created and the state directory. The binary and image caches stay.
# Safe to run when nothing is up.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
require_root

# stop_pids SIGNAL PID...: signal the live ones; wait up to 10 s, then KILL.
stop_pids() {
	local sig="$1" p live=()
	shift
	for p in "$@"; do
		[[ -n "$p" && -d "/proc/$p" ]] && kill "-$sig" "$p" 2>/dev/null && live+=("$p")
	done
	((${#live[@]})) || return 0
	local deadline=$((SECONDS + 10))
	for p in "${live[@]}"; do
		while [[ -d "/proc/$p" ]] && ((SECONDS < deadline)); do sleep 0.2; done
		if [[ -d "/proc/$p" ]]; then kill -KILL "$p" 2>/dev/null || true; fi
	done
}
pid_of() { if [[ -f "$SKIFF_STATE/pids/$1" ]]; then cat "$SKIFF_STATE/pids/$1"; fi; }

node_nums() {
	local f
	for f in "$SKIFF_STATE"/node[0-9]* /run/netns/skiff-node[0-9]* /sys/fs/cgroup/*/skiff-node[0-9]*; do
		[[ -e "$f" ]] && basename "$f" | sed 's/^skiff-node//; s/^node//'
	done | sort -u
}
mapfile -t nodes < <(node_nums)
mapfile -t cg_mounts < <(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts)

step "stop node daemons"
for i in "${nodes[@]}"; do
	stop_pids TERM "$(pid_of "kube-proxy-node$i")" "$(pid_of "kubelet-node$i")"
done
for i in "${nodes[@]}"; do
	stop_pids TERM "$(pid_of "containerd-node$i")"
done

step "stop containers and shims (node cgroups)"
for i in "${nodes[@]}"; do
	for round in 1 2 3 4 5; do
		mapfile -t left < <(find "/sys/fs/cgroup/pids/$(node_name "$i")" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
		((${#left[@]})) || break
		if ((round == 1)); then stop_pids TERM "${left[@]}"; else stop_pids KILL "${left[@]}"; fi
	done
	stop_pids TERM "$(pid_of "anchor-node$i")"
done

step "stop control plane"
stop_pids TERM "$(pid_of kube-scheduler)" "$(pid_of kube-controller-manager)"
stop_pids TERM "$(pid_of kube-apiserver)"
stop_pids TERM "$(pid_of etcd)"

step "remove cgroups"
for i in "${nodes[@]}"; do
	for m in "${cg_mounts[@]}"; do
		d="$m/$(node_name "$i")"
		[[ -d "$d" ]] || continue
		# rmdir deepest first; retry briefly while the kernel frees them.
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[[ -d "$d" ]] || break
			sleep 0.3
		done
		[[ -d "$d" ]] && log "warning: could not remove cgroup $d"
	done
done

step "remove network namespaces, bridge, routes"
for i in "${nodes[@]}"; do
	ns="$(node_name "$i")"
	ip route del "$(node_cidr "$i")" 2>/dev/null || true
	if [[ -e "/run/netns/$ns" ]]; then
		ip netns del "$ns" || log "warning: could not delete netns $ns"
	fi
	ip link del "skv$i" 2>/dev/null || true
done
ip link del "$BRIDGE" 2>/dev/null || true

step "remove files and mount points"
if [[ -d "$SKIFF_STATE" ]]; then
	# Nothing of ours should be mounted in the host namespace; be sure.
	awk -v s="$SKIFF_STATE" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	if [[ -f "$SKIFF_STATE/created-mountpoints" ]]; then
		tac "$SKIFF_STATE/created-mountpoints" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
	fi
	rm -rf "$SKIFF_STATE"
fi
step_done
echo "skiff-cluster: down"
