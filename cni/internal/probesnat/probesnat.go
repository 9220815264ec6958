// Package probesnat makes kubelet's health probes reach enrolled pods: on the
// node, TCP that a local process (kubelet) opens to an enrolled pod's
// address is source-NATed to a link-local probe address, which the pod's
// redirect rules let through to the app instead of sending it to ztunnel.
package probesnat

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// DefaultTable is the node's nftables table (family inet).
const DefaultTable = "skiff-node"

const (
	setV4 = "probe-pods-v4"
	setV6 = "probe-pods-v6"
	chain = "postrouting"
)

// Config configures the SNAT.
type Config struct {
	// Table names the nftables table; DefaultTable when empty.
	Table string
	// ProbeAddr and ProbeAddr6 are the SNAT sources; Istio's by default
	// (inpod.ProbeSNATAddress and inpod.ProbeSNATAddressV6). They must
	// match the pods' inpod.Rules.
	ProbeAddr, ProbeAddr6 netip.Addr
	// KubeletUID, when set, limits the SNAT to sockets of that user.
	// Otherwise every locally opened connection to an enrolled pod is
	// treated as a probe, as Istio does.
	KubeletUID *uint32
	// NetNS is the node's network namespace; nil for the current one.
	NetNS *os.File
}

// SNAT maintains the node's probe SNAT table. It is safe for concurrent use.
type SNAT struct {
	cfg Config
	mu  sync.Mutex
}

// New validates cfg and returns a SNAT; call Reset to create its table.
func New(cfg Config) (*SNAT, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if !cfg.ProbeAddr.IsValid() {
		cfg.ProbeAddr = netip.MustParseAddr(inpod.ProbeSNATAddress)
	}
	if !cfg.ProbeAddr6.IsValid() {
		cfg.ProbeAddr6 = netip.MustParseAddr(inpod.ProbeSNATAddressV6)
	}
	if !cfg.ProbeAddr.Is4() {
		return nil, fmt.Errorf("probe SNAT address %s is not IPv4", cfg.ProbeAddr)
	}
	if !cfg.ProbeAddr6.Is6() || cfg.ProbeAddr6.Is4In6() {
		return nil, fmt.Errorf("probe SNAT address %s is not IPv6", cfg.ProbeAddr6)
	}
	return &SNAT{cfg: cfg}, nil
}

func (s *SNAT) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if s.cfg.NetNS != nil {
		opts = append(opts, nftables.WithNetNSFd(int(s.cfg.NetNS.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("probe SNAT: nftables: %w", err)
	}
	return c, nil
}

func (s *SNAT) table() *nftables.Table {
	return &nftables.Table{Name: s.cfg.Table, Family: nftables.TableFamilyINet}
}

func (s *SNAT) sets(t *nftables.Table) (v4, v6 *nftables.Set) {
	return &nftables.Set{Table: t, Name: setV4, KeyType: nftables.TypeIPAddr},
		&nftables.Set{Table: t, Name: setV6, KeyType: nftables.TypeIP6Addr}
}

func split(ips []netip.Addr) (v4, v6 []nftables.SetElement) {
	for _, ip := range ips {
		ip = ip.Unmap()
		switch {
		case ip.Is4():
			v4 = append(v4, nftables.SetElement{Key: ip.AsSlice()})
		case ip.Is6():
			v6 = append(v6, nftables.SetElement{Key: ip.AsSlice()})
		}
	}
	return v4, v6
}

// Reset (re)creates the table in one transaction with exactly ips in the
// enrolled sets.
func (s *SNAT) Reset(ips []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	t := s.table()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	v4, v6 := s.sets(t)
	e4, e6 := split(ips)
	if err := c.AddSet(v4, e4); err != nil {
		return fmt.Errorf("probe SNAT: %w", err)
	}
	if err := c.AddSet(v6, e6); err != nil {
		return fmt.Errorf("probe SNAT: %w", err)
	}
	ch := c.AddChain(&nftables.Chain{
		Name: chain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: s.rule(unix.NFPROTO_IPV4, v4, 16, s.cfg.ProbeAddr)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: s.rule(unix.NFPROTO_IPV6, v6, 24, s.cfg.ProbeAddr6)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("probe SNAT: creating table %s: %w", s.cfg.Table, err)
	}
	return nil
}

// rule is: meta nfproto <family> meta l4proto tcp <daddr> @set
// <local socket / kubelet uid> snat to <addr>.
func (s *SNAT) rule(family byte, set *nftables.Set, daddrOffset uint32, to netip.Addr) []expr.Any {
	addr := to.AsSlice()
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOffset, Len: uint32(len(addr))},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		// Loading the socket's owner fails (ending the rule) for packets
		// without a local socket: forwarded traffic is never SNATed.
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
	}
	if s.cfg.KubeletUID != nil {
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(*s.cfg.KubeletUID)})
	}
	return append(exprs,
		&expr.Immediate{Register: 1, Data: addr},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(family), RegAddrMin: 1},
	)
}

// Add puts ips into the enrolled sets (present ones are fine).
func (s *SNAT) Add(ips ...netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	v4, v6 := s.sets(s.table())
	e4, e6 := split(ips)
	if len(e4) > 0 {
		if err := c.SetAddElements(v4, e4); err != nil {
			return err
		}
	}
	if len(e6) > 0 {
		if err := c.SetAddElements(v6, e6); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("probe SNAT: adding %v: %w", ips, err)
	}
	return nil
}

// Remove takes ips out of the enrolled sets (absent ones are fine).
func (s *SNAT) Remove(ips ...netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	v4, v6 := s.sets(s.table())
	var errs []error
	for _, ip := range ips {
		set := v4
		if ip.Unmap().Is6() {
			set = v6
		}
		// One element per transaction, so a missing one fails alone.
		if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: ip.Unmap().AsSlice()}}); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("probe SNAT: removing %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

// Members lists the addresses in the enrolled sets.
func (s *SNAT) Members() ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return nil, err
	}
	v4, v6 := s.sets(s.table())
	var out []netip.Addr
	for _, set := range []*nftables.Set{v4, v6} {
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("probe SNAT: listing %s: %w", set.Name, err)
		}
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// Teardown deletes the table.
func (s *SNAT) Teardown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	t := s.table()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("probe SNAT: deleting table %s: %w", s.cfg.Table, err)
	}
	return nil
}
