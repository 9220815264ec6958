// Package inpodmgr manages in-pod proxies: it is ztunnel's zds.Handler.
// For each pod the node agent hands over, it opens ztunnel's listeners
// inside the pod's network namespace (15001, 15006, 15008 and SOCKS5 on
// the pod's loopback), marked so the pod's redirect rules skip them and
// with SO_REUSEPORT so a replacement ztunnel can take over; it closes them
// when the pod is deleted.
package inpodmgr

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/zds"
	"github.com/skiffmesh/skiff/ztunnel/internal/proxy"
	"github.com/skiffmesh/skiff/ztunnel/internal/socket"
)

// Certificates are prefetched for pods and forgotten with them.
type Certificates interface {
	Acquire(ctx context.Context, id spiffeid.ID)
	Release(id spiffeid.ID)
}

// Config configures a Manager.
type Config struct {
	Proxy       *proxy.Proxy
	Certs       Certificates
	TrustDomain spiffeid.TrustDomain
	// SOCKS5Port opens SOCKS5 on the pod's 127.0.0.1; 0 disables it.
	SOCKS5Port int
	Logger     *slog.Logger
}

// Manager is safe for concurrent use; zds.Run calls it serially.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	base context.Context // bounds background work such as prefetches

	mu     sync.Mutex
	pods   map[string]*pod
	synced chan struct{}

	migrateWarned atomic.Bool
}

type pod struct {
	info proxy.PodInfo
	ns   *socket.Namespace
	inst *proxy.Instance
}

// New returns a Manager; ctx bounds its background work.
func New(ctx context.Context, cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, base: ctx, pods: map[string]*pod{}, synced: make(chan struct{})}
}

var _ zds.Handler = (*Manager)(nil)

// AddWorkload opens the pod's listeners in its namespace.
func (m *Manager) AddWorkload(ctx context.Context, w zds.Workload, netns *os.File) error {
	ns, err := socket.Pod(netns)
	if err != nil {
		netns.Close()
		return err
	}
	sa := w.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	id, err := identity.WorkloadID(m.cfg.TrustDomain, w.Namespace, sa)
	if err != nil {
		ns.Close()
		return fmt.Errorf("identity of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	m.mu.Lock()
	old := m.pods[w.UID]
	m.mu.Unlock()
	if old != nil {
		if old.ns.Inode() == ns.Inode() && old.info.ID == id {
			ns.Close() // already serving this pod
			return nil
		}
		// A new sandbox under the same UID: start over.
		m.remove(w.UID)
	}
	info := proxy.PodInfo{UID: w.UID, Name: w.Name, Namespace: w.Namespace, ServiceAccount: sa, ID: id}
	port := func(p int) string { return "0.0.0.0:" + strconv.Itoa(p) }
	cfg := proxy.InstanceConfig{
		Name:        w.Namespace + "/" + w.Name,
		Namespace:   ns,
		Pod:         &info,
		Outbound:    port(inpod.OutboundPort),
		Plaintext:   port(inpod.InboundPlaintextPort),
		HBONE:       port(inpod.InboundHBONEPort),
		Mark:        inpod.SocketMark,
		ReusePort:   true,
		Transparent: true,
	}
	if m.cfg.SOCKS5Port != 0 {
		cfg.SOCKS5 = net.JoinHostPort("127.0.0.1", strconv.Itoa(m.cfg.SOCKS5Port))
	}
	// When a listener closes, let the kernel hand its pending connections
	// to the other listener of the SO_REUSEPORT group (a replacement
	// ztunnel) instead of resetting them.
	if err := ns.Do(enableRequestMigration); err != nil {
		level := slog.LevelDebug
		if m.migrateWarned.CompareAndSwap(false, true) {
			level = slog.LevelWarn // once: it is the same for every pod
		}
		m.log.Log(m.base, level, "cannot enable tcp_migrate_req; a ztunnel restart may reset pending connections", "pod", cfg.Name, "err", err)
	}
	inst, err := m.cfg.Proxy.Start(cfg)
	if err != nil {
		ns.Close()
		return fmt.Errorf("opening listeners in pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	m.cfg.Certs.Acquire(m.base, id)
	m.mu.Lock()
	m.pods[w.UID] = &pod{info: info, ns: ns, inst: inst}
	m.mu.Unlock()
	m.log.Info("pod added", "uid", w.UID, "pod", cfg.Name, "identity", id)
	return nil
}

// KeepWorkload keeps a pod the node agent has no namespace for.
func (m *Manager) KeepWorkload(ctx context.Context, uid string) error {
	m.mu.Lock()
	_, ok := m.pods[uid]
	m.mu.Unlock()
	if !ok {
		m.log.Warn("node agent kept a pod this ztunnel does not serve", "uid", uid)
	}
	return nil
}

// DelWorkload closes the pod's listeners and connections.
func (m *Manager) DelWorkload(ctx context.Context, uid string) error {
	m.remove(uid)
	return nil
}

func (m *Manager) remove(uid string) {
	m.mu.Lock()
	p := m.pods[uid]
	delete(m.pods, uid)
	m.mu.Unlock()
	if p == nil {
		return
	}
	p.inst.Close()
	p.ns.Close()
	m.cfg.Certs.Release(p.info.ID)
	m.log.Info("pod removed", "uid", uid, "pod", p.info.Namespace+"/"+p.info.Name)
}

// SnapshotSent marks the manager in sync with the node agent.
func (m *Manager) SnapshotSent(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.synced:
	default:
		close(m.synced)
		m.log.Info("in sync with the node agent", "pods", len(m.pods))
	}
	return nil
}

// Synced is closed once the node agent's first snapshot was applied.
func (m *Manager) Synced() <-chan struct{} { return m.synced }

// Close removes every pod at once (after a drain).
func (m *Manager) Close() {
	m.mu.Lock()
	uids := make([]string, 0, len(m.pods))
	for uid := range m.pods {
		uids = append(uids, uid)
	}
	m.mu.Unlock()
	for _, uid := range uids {
		m.remove(uid)
	}
}

// PodDump describes a served pod for /config_dump.
type PodDump struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Identity  string   `json:"identity"`
	Netns     uint64   `json:"netnsInode"`
	Listeners []string `json:"listeners"`
}

// Dump lists the served pods, ordered by namespace and name.
func (m *Manager) Dump() []PodDump {
	m.mu.Lock()
	out := make([]PodDump, 0, len(m.pods))
	for _, p := range m.pods {
		d := PodDump{UID: p.info.UID, Name: p.info.Name, Namespace: p.info.Namespace, Identity: p.info.ID.String(), Netns: p.ns.Inode()}
		for _, a := range p.inst.Addrs() {
			d.Listeners = append(d.Listeners, a.String())
		}
		out = append(out, d)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b PodDump) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// enableRequestMigration sets net.ipv4.tcp_migrate_req in the current
// thread's network namespace, unless it is set already: the node agent
// sets it when it installs the pod's rules, and ztunnel's /proc/sys is
// usually read-only.
func enableRequestMigration() error {
	const path = "/proc/sys/net/ipv4/tcp_migrate_req"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return os.WriteFile(path, []byte("1"), 0o644)
}
