#!/usr/bin/env bash
# The "anchor" of node N: started by up.sh inside the node's network namespace
# and a new private mount namespace, it makes the node's view of the file
# system and then sleeps, holding the mount namespace for the node's daemons
# (containerd and its shims, kubelet, kube-proxy), which join it with nsenter.
set -euo pipefail
nd="$1" # node directory on the host: $SKIFF_STATE/node<N>
# A sysfs for this network namespace (so /sys/class/net is the node's),
# keeping the cgroup hierarchies that kubelet and runc need.
mkdir -p "$nd/.cgroup"
mount --rbind /sys/fs/cgroup "$nd/.cgroup"
umount -l /sys
mount -t sysfs sysfs /sys
mount --move "$nd/.cgroup" /sys/fs/cgroup
# The node's own copy of the host paths a node agent uses. /run goes last.
for d in etc/cni/net.d opt/cni/bin var/lib/kubelet var/lib/containerd var/lib/cni var/log/pods var/log/containers run; do
	mkdir -p "$nd/root/$d"
	[[ -d "/$d" ]] || mkdir -p "/$d"
	mount --bind "$nd/root/$d" "/$d"
done
mkdir -p /run/netns /run/containerd
# Mount propagation inside the node, as on a normal machine (kubelet wants
# shared mounts for mountPropagation volumes); nothing leaks to the host.
mount --make-rshared /
touch "$nd/ready"
exec sleep infinity
