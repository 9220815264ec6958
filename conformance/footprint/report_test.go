package footprint

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// phase is one set of figures, keyed "component node".
type phase struct {
	name    string
	figures map[string]usage
}

// report is what make bench-footprint prints.
type report struct {
	nodes  []string
	settle time.Duration
	others map[string]int // pods of other namespaces enrolled throughout
	phases []phase        // one per pod count, then one per round of churn
	churn  []churnResult
}

// before is the phase the churn starts from: the largest pod count.
func (r *report) before() phase { return r.phases[len(podCounts)-1] }

// targets are issue 17's per-node targets at 100 enrolled pods, in MiB of RSS.
var targets = map[string]float64{"cni-agent": 30, "ztunnel": 20}

// growthBar is how far a figure may grow over the churn.
const growthBar = 1.10

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func (r *report) keys() []string {
	var keys []string
	for _, c := range components {
		for key := range r.phases[0].figures {
			if strings.HasPrefix(key, c.name+" ") {
				keys = append(keys, key)
			}
		}
	}
	sort.SliceStable(keys, func(i, j int) bool {
		ci, cj := componentIndex(keys[i]), componentIndex(keys[j])
		if ci != cj {
			return ci < cj
		}
		return keys[i] < keys[j]
	})
	return keys
}

func componentIndex(key string) int {
	for i, c := range components {
		if strings.HasPrefix(key, c.name+" ") {
			return i
		}
	}
	return len(components)
}

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Skiff's cost per node on the local cluster (%d nodes; MiB; pods = enrolled pause pods per node;\n", len(r.nodes))
	fmt.Fprintf(&b, "each figure the median of %d samples over %s, taken after %s idle)\n", samples, (samples-1)*sampleGap, r.settle)
	for _, node := range r.nodes {
		if n := r.others[node]; n > 0 {
			fmt.Fprintf(&b, "%s also had %d enrolled pods of other namespaces throughout\n", node, n)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-24s %-30s %7s %7s %7s %7s %7s %7s %6s %7s %5s %5s\n", "component node", "phase", "RSS", "anon", "file", "cgroup", "cg-file", "heap", "gorout", "threads", "fds", "netns")
	for _, key := range r.keys() {
		for _, p := range r.phases {
			u, ok := p.figures[key]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "%-24s %-30s %7.1f %7.1f %7.1f %7.1f %7.1f %7s %6s %7d %5d %5d\n", key, p.name,
				mib(u.RSS), mib(u.Anon), mib(u.File), mib(u.Cgroup), mib(u.CgroupFile), heap(u.Heap), count(u.Goroutines), u.Threads, u.FDs, u.NetNS)
		}
	}
	if len(r.phases) <= len(podCounts) {
		return b.String()
	}
	before := r.before()
	churned := r.phases[len(podCounts):]
	for i, after := range churned {
		over := fmt.Sprintf("the churn (%s, ", r.churn[0].d)
		if len(churned) > 1 {
			over = fmt.Sprintf("%d x %s of churn (", i+1, r.churn[0].d)
		}
		r.growth(&b, over, before, after)
	}
	// A process that only warmed up in the first round stays level in
	// the next ones; one that leaks grows in each.
	for i := 1; i < len(churned); i++ {
		r.growth(&b, fmt.Sprintf("round %d of churn alone, against the figures after round %d (", i+1, i), churned[i-1], churned[i])
	}
	fmt.Fprintf(&b, "\nTargets at %d pods per node (RSS, worst node):\n", podCounts[len(podCounts)-1])
	for _, c := range components {
		limit, ok := targets[c.name]
		if !ok {
			continue
		}
		worst := 0.0
		for key, u := range before.figures {
			if strings.HasPrefix(key, c.name+" ") {
				worst = max(worst, mib(u.RSS))
			}
		}
		fmt.Fprintf(&b, "  %-12s %6.1f MiB  target <= %.0f MiB  %s\n", c.name, worst, limit, verdict(worst <= limit))
	}
	fmt.Fprintf(&b, "\nBinaries (as in the images):")
	seen := map[string]bool{}
	for _, key := range r.keys() {
		name := strings.Fields(key)[0]
		if u := before.figures[key]; !seen[name] && u.Binary > 0 {
			seen[name] = true
			fmt.Fprintf(&b, "  %s %.1f MiB", name, mib(u.Binary))
		}
	}
	b.WriteString("\n\n")
	for _, c := range r.churn {
		fmt.Fprintf(&b, "Churn: %d pods deleted and replaced in %s under traffic;", c.deleted, c.d)
		for i, l := range c.loads {
			fmt.Fprintf(&b, " load-%d: %s;", i+1, l.Summary())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// growth writes each process's growth from before to after; over says
// over what, and opens the parenthesis the ratio's definition closes.
func (r *report) growth(b *strings.Builder, over string, before, after phase) {
	fmt.Fprintf(b, "\nGrowth over %sfigure after / figure before, same pods; bar %.2fx):\n", over, growthBar)
	for _, key := range r.keys() {
		x, okx := before.figures[key]
		y, oky := after.figures[key]
		if !okx || !oky {
			fmt.Fprintf(b, "  %-24s not running in both phases (restarted?)\n", key)
			continue
		}
		worst := max(ratio(y.RSS, x.RSS), ratio(y.Cgroup, x.Cgroup))
		fmt.Fprintf(b, "  %-24s RSS %.2fx  anon %.2fx  cgroup %.2fx  heap %.2fx  goroutines %s->%s  fds %d->%d  netns %d->%d  %s\n", key,
			ratio(y.RSS, x.RSS), ratio(y.Anon, x.Anon), ratio(y.Cgroup, x.Cgroup), ratio(y.Heap, x.Heap),
			count(x.Goroutines), count(y.Goroutines), x.FDs, y.FDs, x.NetNS, y.NetNS, verdict(worst <= growthBar))
	}
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func heap(b int64) string {
	if b < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", mib(b))
}

func count(n int) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}
