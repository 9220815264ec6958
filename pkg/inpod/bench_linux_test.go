package inpod_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

// istioRules is the in-pod rule set Istio's CNI agent writes with
// iptables-restore, for the same redirection as Rules.
var istioRules = fmt.Sprintf(`*mangle
:ISTIO_PRERT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_PRERT -m mark --mark %#[1]x/%#[3]x -j CONNMARK --set-xmark %#[2]x/%#[3]x
-A ISTIO_PRERT -s %[4]s/32 -p tcp -j ACCEPT
-A ISTIO_PRERT -p tcp --dport %[5]d -m mark ! --mark %#[1]x/%#[3]x -j TPROXY --on-port %[5]d --tproxy-mark %#[2]x/%#[3]x
-A ISTIO_PRERT -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark %#[1]x/%#[3]x -j TPROXY --on-port %[6]d --tproxy-mark %#[2]x/%#[3]x
-A ISTIO_OUTPUT -m connmark --mark %#[2]x/%#[3]x -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
COMMIT
*nat
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d %[4]s/32 -p tcp -j ACCEPT
-A ISTIO_OUTPUT -p tcp -m mark --mark %#[2]x/%#[3]x -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark %#[1]x/%#[3]x -j REDIRECT --to-ports %[7]d
COMMIT
`, inpod.SocketMark, inpod.TProxyMark, inpod.MarkMask, inpod.ProbeSNATAddress, inpod.InboundHBONEPort, inpod.InboundPlaintextPort, inpod.OutboundPort)

// BenchmarkPodRules measures what enrolling one new pod costs in rule
// installation: Skiff's nftables-over-netlink Install against Istio's way,
// iptables-restore (nft and legacy backends) plus the same policy routing.
// Each operation works on a fresh network namespace, as CNI ADD does; the
// namespace's creation is not timed. It prints the ratios at the end.
func BenchmarkPodRules(b *testing.B) {
	inpodtest.RequireRoot(b)
	type method struct {
		name    string
		needs   string // a binary the method runs
		install func(ns *os.File) error
	}
	restore := func(bin string) func(ns *os.File) error {
		return func(ns *os.File) error {
			if err := inpod.Do(ns, func() error {
				cmd := exec.Command(bin, "-w")
				cmd.Stdin = bytes.NewReader([]byte(istioRules))
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%s: %v: %s", bin, err, out)
				}
				return nil
			}); err != nil {
				return err
			}
			return policyRouting(ns)
		}
	}
	methods := []method{
		{"skiff-nftables-netlink", "", inpod.Rules{}.Install},
		{"istio-iptables-restore-nft", "iptables-nft-restore", restore("iptables-nft-restore")},
		{"istio-iptables-restore-legacy", "iptables-legacy-restore", restore("iptables-legacy-restore")},
	}
	perOp := map[string]time.Duration{}
	p99 := map[string]time.Duration{}
	for _, m := range methods {
		if m.needs != "" {
			if _, err := exec.LookPath(m.needs); err != nil {
				b.Logf("skipping %s: %v", m.name, err)
				continue
			}
		}
		b.Run(m.name, func(b *testing.B) {
			var lat []time.Duration
			var total time.Duration
			for range b.N {
				b.StopTimer()
				ns, err := inpodtest.CreateNetNS(inpodtest.RandName("skb-"))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				err = m.install(ns.File)
				d := time.Since(start)
				b.StopTimer()
				ns.Delete()
				if err != nil {
					b.Skipf("%s unavailable here: %v", m.name, err)
				}
				lat = append(lat, d)
				total += d
				b.StartTimer()
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			perOp[m.name] = total / time.Duration(b.N)
			p99[m.name] = lat[len(lat)*99/100]
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
	base := perOp[methods[0].name]
	if base == 0 {
		return
	}
	fmt.Println("\nIn-pod rule installation per new pod (ratio: to Skiff's nftables install)")
	fmt.Printf("%-32s %12s %12s %8s\n", "method", "mean µs", "p99 µs", "ratio")
	for _, m := range methods {
		d, ok := perOp[m.name]
		if !ok {
			continue
		}
		fmt.Printf("%-32s %12.0f %12.0f %8.2f\n", m.name, float64(d.Microseconds()), float64(p99[m.name].Microseconds()), float64(d)/float64(base))
	}
}

// policyRouting adds what Rules.Install adds besides the nftables rules
// (lo up, the fwmark rule, the local route), as Istio's agent does too.
func policyRouting(ns *os.File) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	rule := netlink.NewRule()
	rule.Priority = inpod.RoutingRulePriority
	rule.Mark = inpod.TProxyMark
	mask := uint32(inpod.MarkMask)
	rule.Mask = &mask
	rule.Table = inpod.RouteTable
	if err := h.RuleAdd(rule); err != nil {
		return err
	}
	return h.RouteReplace(&netlink.Route{
		LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Table: inpod.RouteTable, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
	})
}
