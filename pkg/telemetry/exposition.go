package telemetry

import (
	"bufio"
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
)

// Istio's metrics are written to a scrape here, in Prometheus's text
// format, rather than handed to the OpenTelemetry Prometheus exporter. The
// exporter builds a descriptor, label pairs and a protobuf message for
// every series on every scrape: with ztunnel's 19 labels that is about
// 45 kB of garbage and 0.1 ms per series and scrape, for figures that
// change by a few integers. Here each label set is rendered once, when its
// series is created, and a scrape writes numbers. The text is the
// exporter's, byte for byte (the tests hold the two side by side): the
// same names and suffixes, label names built by its label namer, series in
// the order Prometheus's registry sorts them, numbers formatted as its
// text encoder formats them.

// seriesLabels is one label set, rendered for the text format.
type seriesLabels struct {
	// values are the label values in label-name order: Prometheus's
	// registry sorts a family's series by them.
	values []string
	// text is `name="value",...`, names sorted, values escaped.
	text string
}

func newSeriesLabels(set attribute.Set) seriesLabels {
	type pair struct{ name, value string }
	pairs := make([]pair, 0, set.Len())
	// The exporter's label namer (UTF-8 escaped to underscores, as the
	// Provider's translation strategy has it). The label sets here are
	// Skiff's own: no two keys come out alike, and none is empty, the one
	// key Build refuses.
	var namer otlptranslator.LabelNamer
	for it := set.Iter(); it.Next(); {
		kv := it.Attribute()
		name, err := namer.Build(string(kv.Key))
		if err != nil {
			continue
		}
		pairs = append(pairs, pair{name, kv.Value.String()})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return strings.Compare(a.name, b.name) })
	l := seriesLabels{values: make([]string, len(pairs))}
	var b strings.Builder
	for i, p := range pairs {
		l.values[i] = p.value
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.name)
		b.WriteString(`="`)
		labelValueEscaper.WriteString(&b, p.value)
		b.WriteByte('"')
	}
	l.text = b.String()
	return l
}

// compareSeries orders label sets as Prometheus's registry does: fewer
// labels first, then value by value.
func compareSeries(a, b *seriesLabels) int {
	if c := cmp.Compare(len(a.values), len(b.values)); c != 0 {
		return c
	}
	return slices.Compare(a.values, b.values)
}

var (
	labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper       = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// textWriter writes metric families in Prometheus's text format.
type textWriter struct {
	w   *bufio.Writer
	num []byte
}

// family starts a family: its HELP and TYPE lines.
func (t *textWriter) family(name, help, typ string) {
	t.w.WriteString("# HELP ")
	t.w.WriteString(name)
	t.w.WriteByte(' ')
	helpEscaper.WriteString(t.w, help)
	t.w.WriteString("\n# TYPE ")
	t.w.WriteString(name)
	t.w.WriteByte(' ')
	t.w.WriteString(typ)
	t.w.WriteByte('\n')
}

// sample writes one line: name and suffix, l's labels and, unless le is
// NaN, an "le" label, then v.
func (t *textWriter) sample(name, suffix string, l *seriesLabels, le, v float64) {
	t.w.WriteString(name)
	t.w.WriteString(suffix)
	withLE := !math.IsNaN(le)
	if l.text != "" || withLE {
		t.w.WriteByte('{')
		t.w.WriteString(l.text)
		if withLE {
			if l.text != "" {
				t.w.WriteByte(',')
			}
			t.w.WriteString(`le="`)
			t.float(le)
			t.w.WriteByte('"')
		}
		t.w.WriteByte('}')
	}
	t.w.WriteByte(' ')
	t.float(v)
	t.w.WriteByte('\n')
}

// float formats f as Prometheus's text encoder does.
func (t *textWriter) float(f float64) {
	switch {
	case f == 1:
		t.w.WriteByte('1')
	case f == 0:
		t.w.WriteByte('0')
	case f == -1:
		t.w.WriteString("-1")
	case math.IsNaN(f):
		t.w.WriteString("NaN")
	case math.IsInf(f, +1):
		t.w.WriteString("+Inf")
	case math.IsInf(f, -1):
		t.w.WriteString("-Inf")
	default:
		t.num = strconv.AppendFloat(t.num[:0], f, 'g', -1, 64)
		t.w.Write(t.num)
	}
}
