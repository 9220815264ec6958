package inpod

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) that holds a pod's redirect
// rules. The node agent owns it; nothing else should write to it.
const TableName = "skiff-inpod"

// RoutingRulePriority is the preference of the "fwmark TProxyMark lookup
// RouteTable" policy-routing rule, ahead of the main table (32766).
const RoutingRulePriority = 32764

// Chain names inside TableName.
const (
	ChainPrerouting = "prerouting" // filter, hook prerouting, priority mangle
	ChainOutput     = "output"     // route, hook output, priority mangle
	ChainOutputNAT  = "output-nat" // nat, hook output, priority dstnat
)

// rulesVersion changes whenever the rule set below changes meaning, so an
// agent finds rules written by an older version stale and rewrites them.
const rulesVersion = "2"

// commentPrefix starts the comment carried by every rule this package writes.
const commentPrefix = "skiff-inpod "

// Rules describes the in-pod redirection installed into a pod's network
// namespace:
//
//   - prerouting: packets carrying SocketMark (ztunnel's own connections)
//     set TProxyMark on their connection and are accepted; packets from the
//     probe address are accepted; TCP to InboundHBONEPort is transparently
//     proxied to ztunnel's HBONE listener; other new inbound TCP not to
//     localhost is transparently proxied to InboundPlaintextPort. Both
//     proxied paths mark packets with TProxyMark and drop the packet when
//     ztunnel's listener is missing (fail closed). UDP to InboundHBONEPort
//     (HBONE over QUIC) is accepted only for a socket carrying SocketMark,
//     ztunnel's own, and dropped otherwise: when ztunnel is gone, or an
//     application in the pod binds the port.
//   - output: the connection mark is restored to the packet mark, so replies
//     of ztunnel's original-source connections (TProxyMark) are routed back
//     to ztunnel by "fwmark TProxyMark/MarkMask lookup RouteTable" and
//     "local 0.0.0.0/0 dev lo table RouteTable".
//   - output (nat): outbound TCP that does not leave via lo, is not a reply
//     to the probe address and does not carry SocketMark or TProxyMark is
//     redirected to OutboundPort.
//
// The zero value uses ProbeSNATAddress and ProbeSNATAddressV6.
type Rules struct {
	// ProbeAddr is the IPv4 source of kubelet probes after the node's SNAT.
	ProbeAddr netip.Addr
	// ProbeAddr6 is the IPv6 equivalent.
	ProbeAddr6 netip.Addr
	// IPv6 also installs the IPv6 policy-routing rule and local route; set it
	// for pods with an IPv6 address. The nftables rules cover both families
	// either way.
	IPv6 bool
}

// State reports what Inspect found in a network namespace.
type State struct {
	// Table is true when TableName exists.
	Table bool
	// Foreign is true when TableName exists but another program created it
	// (see ErrForeignTable); whatever it holds is not Skiff's redirection.
	Foreign bool
	// Rules lists, as "chain/name", the rules found that match the expected
	// set.
	Rules []string
	// Missing lists, as "chain/name", the expected rules that are absent or differ
	// (for example, written for another probe address or version).
	Missing []string
	// Extra counts rules in the table that this version would not write.
	Extra int
	// RoutingRule and LocalRoute report the policy-routing rule and the
	// local route in RouteTable, per IPv4 (and IPv6 when Rules.IPv6).
	RoutingRule, LocalRoute bool
}

// Complete reports whether every rule, the routing rule and the local route
// are in place exactly as Install writes them.
func (s State) Complete() bool {
	return s.Table && !s.Foreign && len(s.Missing) == 0 && s.Extra == 0 && s.RoutingRule && s.LocalRoute
}

// Absent reports whether none of the redirection is present.
func (s State) Absent() bool {
	return !s.Table && !s.RoutingRule && !s.LocalRoute
}

func (s State) String() string {
	switch {
	case s.Complete():
		return "complete"
	case s.Absent():
		return "absent"
	}
	var parts []string
	if !s.Table {
		parts = append(parts, "no nftables table")
	}
	if s.Foreign {
		parts = append(parts, "nftables table created by another program")
	}
	if len(s.Missing) > 0 {
		parts = append(parts, "missing rules "+strings.Join(s.Missing, ","))
	}
	if s.Extra > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected rules", s.Extra))
	}
	if !s.RoutingRule {
		parts = append(parts, "no policy-routing rule")
	}
	if !s.LocalRoute {
		parts = append(parts, "no local route")
	}
	return "partial: " + strings.Join(parts, "; ")
}

func (r Rules) withDefaults() (Rules, error) {
	if !r.ProbeAddr.IsValid() {
		r.ProbeAddr = netip.MustParseAddr(ProbeSNATAddress)
	}
	if !r.ProbeAddr6.IsValid() {
		r.ProbeAddr6 = netip.MustParseAddr(ProbeSNATAddressV6)
	}
	if !r.ProbeAddr.Is4() {
		return r, fmt.Errorf("inpod: probe address %s is not IPv4", r.ProbeAddr)
	}
	if !r.ProbeAddr6.Is6() || r.ProbeAddr6.Is4In6() {
		return r, fmt.Errorf("inpod: probe address %s is not IPv6", r.ProbeAddr6)
	}
	return r, nil
}

// fingerprint identifies the configuration the rules were written for.
func (r Rules) fingerprint() string {
	h := sha256.Sum256([]byte(rulesVersion + "|" + r.ProbeAddr.String() + "|" + r.ProbeAddr6.String()))
	return hex.EncodeToString(h[:4])
}

// Install writes the redirection into the network namespace ns (an open
// /proc/<pid>/ns/net or /var/run/netns/<name> file). It is idempotent: the
// nftables table is replaced in one atomic transaction, and the routing
// rule and route are added only when missing. It also brings lo up, which
// the local route needs. It refuses, with an error wrapping
// ErrForeignTable, when another program created TableName, and then writes
// nothing.
func (r Rules) Install(ns *os.File) error {
	r, err := r.withDefaults()
	if err != nil {
		return err
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("inpod: nftables: %w", err)
	}
	table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	conn.AddTable(table)
	// An existing table is replaced: add (no-op), delete, add, in the one
	// batch the kernel applies atomically. Deleting costs milliseconds
	// (the kernel waits for readers), so a new pod's namespace skips it.
	existing, err := lookupTable(ns)
	if err != nil {
		return err
	}
	if existing != nil {
		if err := existing.refuse("write into"); err != nil {
			return err
		}
		conn.DelTable(table)
		conn.AddTable(table)
	}
	chains := addChains(conn, table)
	fp := r.fingerprint()
	for _, spec := range r.ruleSpecs() {
		conn.AddRule(&nftables.Rule{
			Table:    table,
			Chain:    chains[spec.chain],
			Exprs:    spec.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, commentPrefix+spec.name+" "+fp),
		})
	}
	if err := conn.Flush(); err != nil {
		return explainFlush(ns, "write into", fmt.Errorf("inpod: installing nftables rules: %w", err))
	}
	if err := withNetlink(ns, func(h *netlink.Handle) error { return r.installRouting(h) }); err != nil {
		return err
	}
	// A replacement ztunnel takes over the pod's listeners with SO_REUSEPORT;
	// with request migration the kernel hands connections still queued on
	// the old listener to the new one instead of resetting them. ztunnel
	// cannot set it itself where /proc/sys is read-only (in a container).
	if err := Do(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0o644)
	}); err != nil {
		return fmt.Errorf("inpod: enabling net.ipv4.tcp_migrate_req: %w", err)
	}
	return nil
}

// Remove deletes everything Install writes from ns. Missing pieces are not
// an error, so Remove is idempotent. A TableName that another program
// created is left in place and reported with an error wrapping
// ErrForeignTable (the routing rule and route, Skiff's own, still go).
func (Rules) Remove(ns *os.File) error {
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("inpod: nftables: %w", err)
	}
	var errs []error
	existing, err := lookupTable(ns)
	switch {
	case err != nil:
		errs = append(errs, err)
	case existing == nil:
	default:
		if err := existing.refuse("delete"); err != nil {
			errs = append(errs, err)
			break
		}
		table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
		// AddTable first so the delete cannot fail on a table gone meanwhile.
		conn.AddTable(table)
		conn.DelTable(table)
		if err := conn.Flush(); err != nil {
			errs = append(errs, explainFlush(ns, "delete", fmt.Errorf("inpod: removing nftables table: %w", err)))
		}
	}
	if err := withNetlink(ns, removeRouting); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Inspect reports which parts of the redirection exist in ns and whether
// they are exactly what r would install.
func (r Rules) Inspect(ns *os.File) (State, error) {
	r, err := r.withDefaults()
	if err != nil {
		return State{}, err
	}
	var st State
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return st, fmt.Errorf("inpod: nftables: %w", err)
	}
	want := r.ruleSpecs()
	found := map[string]bool{}
	info, err := lookupTable(ns)
	switch {
	case err != nil:
		return st, err
	case info == nil:
	default:
		st.Table = true
		st.Foreign = info.foreign()
		table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
		fp := r.fingerprint()
		for _, chain := range []string{ChainPrerouting, ChainOutput, ChainOutputNAT} {
			rules, err := conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
			if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return st, fmt.Errorf("inpod: listing chain %s: %w", chain, err)
			}
			for _, rule := range rules {
				name, ok := parseComment(rule.UserData, fp)
				key := chain + "/" + name
				if !ok || !slices.ContainsFunc(want, func(s ruleSpec) bool { return s.name == name && s.chain == chain }) || found[key] {
					st.Extra++
					continue
				}
				found[key] = true
			}
		}
	}
	for _, s := range want {
		if found[s.chain+"/"+s.name] {
			st.Rules = append(st.Rules, s.chain+"/"+s.name)
		} else {
			st.Missing = append(st.Missing, s.chain+"/"+s.name)
		}
	}
	err = withNetlink(ns, func(h *netlink.Handle) error {
		var err error
		st.RoutingRule, st.LocalRoute, err = r.routingState(h)
		return err
	})
	return st, err
}

// parseComment returns the rule name from a comment written by Install for
// the configuration fingerprint fp.
func parseComment(udata []byte, fp string) (string, bool) {
	// Userdata is a list of type-length-value attributes.
	for len(udata) >= 2 {
		typ, n := udata[0], int(udata[1])
		if len(udata) < 2+n {
			return "", false
		}
		val := udata[2 : 2+n]
		udata = udata[2+n:]
		if userdata.Type(typ) != userdata.TypeComment {
			continue
		}
		s := strings.TrimSuffix(string(val), "\x00")
		rest, ok := strings.CutPrefix(s, commentPrefix)
		if !ok {
			return "", false
		}
		name, got, ok := strings.Cut(rest, " ")
		if !ok || got != fp {
			return "", false
		}
		return name, true
	}
	return "", false
}

func addChains(conn *nftables.Conn, table *nftables.Table) map[string]*nftables.Chain {
	return map[string]*nftables.Chain{
		ChainPrerouting: conn.AddChain(&nftables.Chain{
			Name: ChainPrerouting, Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
		}),
		ChainOutput: conn.AddChain(&nftables.Chain{
			Name: ChainOutput, Table: table, Type: nftables.ChainTypeRoute,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle,
		}),
		ChainOutputNAT: conn.AddChain(&nftables.Chain{
			Name: ChainOutputNAT, Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
		}),
	}
}

type ruleSpec struct {
	chain string
	name  string
	exprs []expr.Any
}

// ruleSpecs is the rule set, in order. Names are stable: Inspect matches on
// them.
func (r Rules) ruleSpecs() []ruleSpec {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	return []ruleSpec{
		// Prerouting.
		{ChainPrerouting, "ztunnel-mark", cat(
			markMasked(expr.CmpOpEq, SocketMark),
			setConnMark(TProxyMark),
			accept)},
		{ChainPrerouting, "probe", cat(saddr4(r.ProbeAddr), accept)},
		{ChainPrerouting, "probe6", cat(saddr6(r.ProbeAddr6), accept)},
		{ChainPrerouting, "hbone-tproxy", cat(tcpDport(InboundHBONEPort), tproxy(InboundHBONEPort), setMark(TProxyMark), accept)},
		// Reached only when ztunnel has no listener: fail closed.
		{ChainPrerouting, "hbone-closed", cat(tcpDport(InboundHBONEPort), drop)},
		// QUIC needs no redirect (it is addressed to the pod's own port);
		// the port is reserved for ztunnel like the TCP one.
		{ChainPrerouting, "hbone-udp", cat(udpDport(InboundHBONEPort), socketMarkMasked(SocketMark), accept)},
		{ChainPrerouting, "hbone-udp-closed", cat(udpDport(InboundHBONEPort), drop)},
		{ChainPrerouting, "established", cat(ctEstablished(), accept)},
		{ChainPrerouting, "loopback", cat(daddr4Prefix(netip.MustParsePrefix("127.0.0.0/8")), accept)},
		{ChainPrerouting, "loopback6", cat(daddr6(netip.IPv6Loopback()), accept)},
		{ChainPrerouting, "inbound-tproxy", cat(isTCP(), tproxy(InboundPlaintextPort), setMark(TProxyMark), accept)},
		{ChainPrerouting, "inbound-closed", cat(isTCP(), drop)},

		// Output, before routing is redone: restore the connection's mark so
		// replies to ztunnel's original-source connections use RouteTable.
		{ChainOutput, "restore-mark", cat(connMarkMasked(TProxyMark), restoreMark())},

		// Output NAT.
		{ChainOutputNAT, "probe-reply", cat(daddr4(r.ProbeAddr), accept)},
		{ChainOutputNAT, "probe-reply6", cat(daddr6(r.ProbeAddr6), accept)},
		{ChainOutputNAT, "tproxy-reply", cat(markMasked(expr.CmpOpEq, TProxyMark), accept)},
		{ChainOutputNAT, "ztunnel", cat(markMasked(expr.CmpOpEq, SocketMark), accept)},
		{ChainOutputNAT, "loopback", cat(oifname("lo"), accept)},
		{ChainOutputNAT, "outbound-redirect", cat(isTCP(), redirect(OutboundPort))},
	}
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case expr.Any:
			out = append(out, v)
		case []expr.Any:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("inpod: bad rule part %T", p))
		}
	}
	return out
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

func tcpDport(port uint16) []expr.Any {
	return append(isTCP(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	)
}

func udpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// socketMarkMasked matches "socket mark & MarkMask == v": the local
// socket the packet is for carries mark v. No socket, no match.
func socketMarkMasked(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyMark, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(v)},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// ipField loads the IPv4 (offset 12 source, 16 destination) or IPv6 (8, 24)
// address field and compares it with addr.
func ipField(proto byte, offset uint32, addr netip.Addr) []expr.Any {
	b := addr.AsSlice()
	return append(nfproto(proto),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(b))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	)
}

func saddr4(a netip.Addr) []expr.Any { return ipField(unix.NFPROTO_IPV4, 12, a) }
func daddr4(a netip.Addr) []expr.Any { return ipField(unix.NFPROTO_IPV4, 16, a) }
func saddr6(a netip.Addr) []expr.Any { return ipField(unix.NFPROTO_IPV6, 8, a) }
func daddr6(a netip.Addr) []expr.Any { return ipField(unix.NFPROTO_IPV6, 24, a) }

func daddr4Prefix(p netip.Prefix) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	return append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	)
}

func oifname(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append([]byte(name), 0)},
	}
}

// markMasked matches "meta mark & MarkMask <op> v".
func markMasked(op expr.CmpOp, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: op, Register: 1, Data: native32(v)},
	}
}

// connMarkMasked matches "ct mark & MarkMask == v".
func connMarkMasked(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(MarkMask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(v)},
	}
}

// setMark is "meta mark set meta mark & ~MarkMask | v".
func setMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^uint32(MarkMask)), Xor: native32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// setConnMark is "ct mark set ct mark & ~MarkMask | v".
func setConnMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^uint32(MarkMask)), Xor: native32(v)},
		&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1},
	}
}

// restoreMark is "meta mark set ct mark".
func restoreMark() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}
}

// tproxy is "tproxy to :port" for either family. It only breaks the rule
// (so the next rule runs) when no socket listens on port.
func tproxy(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.TProxy{Family: unix.NFPROTO_UNSPEC, TableFamily: byte(nftables.TableFamilyINet), RegPort: 1},
	}
}

func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

// withNetlink runs f with a netlink handle inside ns.
func withNetlink(ns *os.File, f func(*netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return fmt.Errorf("inpod: netlink in pod namespace: %w", err)
	}
	defer h.Close()
	return f(h)
}

func (r Rules) families() []int {
	if r.IPv6 {
		return []int{netlink.FAMILY_V4, netlink.FAMILY_V6}
	}
	return []int{netlink.FAMILY_V4}
}

func routingRule(family int) *netlink.Rule {
	rule := netlink.NewRule()
	rule.Family = family
	rule.Priority = RoutingRulePriority
	rule.Mark = TProxyMark
	mask := uint32(MarkMask)
	rule.Mask = &mask
	rule.Table = RouteTable
	return rule
}

func localRoute(h *netlink.Handle, family int) (*netlink.Route, error) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("inpod: finding lo: %w", err)
	}
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == netlink.FAMILY_V6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       dst,
		Table:     RouteTable,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Family:    family,
	}, nil
}

// ourRules lists the policy-routing rules Install adds, in family.
func ourRules(h *netlink.Handle, family int) ([]netlink.Rule, error) {
	rules, err := h.RuleList(family)
	if err != nil {
		return nil, fmt.Errorf("inpod: listing routing rules: %w", err)
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Table == RouteTable && r.Mark == TProxyMark && r.Mask != nil && *r.Mask == MarkMask {
			out = append(out, r)
		}
	}
	return out, nil
}

func (r Rules) installRouting(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("inpod: finding lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("inpod: bringing lo up: %w", err)
	}
	for _, family := range r.families() {
		existing, err := ourRules(h, family)
		if err != nil {
			return err
		}
		if len(existing) == 0 {
			if err := h.RuleAdd(routingRule(family)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("inpod: adding routing rule: %w", err)
			}
		}
		route, err := localRoute(h, family)
		if err != nil {
			return err
		}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("inpod: adding local route to table %d: %w", RouteTable, err)
		}
	}
	return nil
}

func (r Rules) routingState(h *netlink.Handle) (rule, route bool, err error) {
	rule, route = true, true
	for _, family := range r.families() {
		existing, err := ourRules(h, family)
		if err != nil {
			return false, false, err
		}
		rule = rule && len(existing) > 0
		want, err := localRoute(h, family)
		if err != nil {
			return false, false, err
		}
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return false, false, fmt.Errorf("inpod: listing routes: %w", err)
		}
		route = route && slices.ContainsFunc(routes, func(rt netlink.Route) bool {
			return rt.Type == unix.RTN_LOCAL && rt.LinkIndex == want.LinkIndex && rt.Dst != nil &&
				rt.Dst.IP.Equal(want.Dst.IP) && ones(rt.Dst) == 0
		})
	}
	return rule, route, nil
}

func ones(n *net.IPNet) int { o, _ := n.Mask.Size(); return o }

func removeRouting(h *netlink.Handle) error {
	var errs []error
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := ourRules(h, family)
		if err != nil {
			if errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		for _, rule := range rules {
			if err := h.RuleDel(&rule); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("inpod: deleting routing rule: %w", err))
			}
		}
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			if !errors.Is(err, unix.EAFNOSUPPORT) {
				errs = append(errs, fmt.Errorf("inpod: listing routes: %w", err))
			}
			continue
		}
		for _, rt := range routes {
			if rt.Type != unix.RTN_LOCAL || rt.Dst == nil || ones(rt.Dst) != 0 {
				continue
			}
			if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("inpod: deleting local route: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
