package helm_test

// The Grafana dashboard the all-in-one chart ships (skiff/dashboards) must
// query only what Skiff exports. What Skiff exports is read from its code:
// the scan below parses the components' Go files (go/ast, no type
// checking), finds every OpenTelemetry instrument they create
// (meter.Int64Counter("name", metric.WithUnit(...)), ...) and names it as
// the Prometheus exporter does, with the exporter's own naming library
// (otlptranslator) under the strategy the components configure, which the
// scan checks. The scan is kept honest by TestScanMatchesScrape: for the
// shared telemetry package, the names it derives are exactly those a real
// exporter writes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiffmesh/skiff/pkg/telemetry"
)

// dashboardFiles are the dashboards the chart ships, relative to this
// package.
const dashboardGlob = "skiff/dashboards/*.json"

// modulePath is Skiff's module, whose import paths the scan follows.
const modulePath = "github.com/skiffmesh/skiff"

// componentDirs hold the code that registers Skiff's metrics, relative to
// this package.
var componentDirs = []string{"../ztunnel", "../waypoint", "../istiod-lite", "../cni", "../pkg"}

// telemetryDir is the shared telemetry package, which a test can run.
var telemetryDir = filepath.Join("..", "pkg", "telemetry")

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"instance", "job"}

// defaultStrategy is how a Prometheus exporter names metrics unless told
// otherwise. Each component's instruments are named by its own exporter's
// strategy, and those without an exporter (ztunnel, the waypoint, the CNI
// agent) by pkg/telemetry's, which they all use.
var defaultStrategy = otlptranslator.UnderscoreEscapingWithSuffixes

// knownStrategies are the translation strategies the scan can name by.
var knownStrategies = []otlptranslator.TranslationStrategyOption{
	otlptranslator.UnderscoreEscapingWithSuffixes,
	otlptranslator.UnderscoreEscapingWithoutSuffixes,
}

// instrumentTypes maps the OpenTelemetry Meter's instrument constructors
// to the metric type the exporter names them by.
var instrumentTypes = map[string]otlptranslator.MetricType{
	"Int64Counter":                   otlptranslator.MetricTypeMonotonicCounter,
	"Float64Counter":                 otlptranslator.MetricTypeMonotonicCounter,
	"Int64ObservableCounter":         otlptranslator.MetricTypeMonotonicCounter,
	"Float64ObservableCounter":       otlptranslator.MetricTypeMonotonicCounter,
	"Int64UpDownCounter":             otlptranslator.MetricTypeNonMonotonicCounter,
	"Float64UpDownCounter":           otlptranslator.MetricTypeNonMonotonicCounter,
	"Int64ObservableUpDownCounter":   otlptranslator.MetricTypeNonMonotonicCounter,
	"Float64ObservableUpDownCounter": otlptranslator.MetricTypeNonMonotonicCounter,
	"Int64Gauge":                     otlptranslator.MetricTypeGauge,
	"Float64Gauge":                   otlptranslator.MetricTypeGauge,
	"Int64ObservableGauge":           otlptranslator.MetricTypeGauge,
	"Float64ObservableGauge":         otlptranslator.MetricTypeGauge,
	"Int64Histogram":                 otlptranslator.MetricTypeHistogram,
	"Float64Histogram":               otlptranslator.MetricTypeHistogram,
}

// exporterOptions are the options of the Prometheus exporter that do not
// change metric or label names.
var exporterOptions = []string{"WithRegisterer", "WithProducer", "WithoutScopeInfo", "WithoutTargetInfo"}

const (
	otelPrometheusPath = "go.opentelemetry.io/otel/exporters/prometheus"
	otelAttributePath  = "go.opentelemetry.io/otel/attribute"
	otlptranslatorPath = "github.com/prometheus/otlptranslator"
)

// exported is what Skiff's code exports to Prometheus.
type exported struct {
	// samples maps each sample name (a histogram's _bucket, _sum and
	// _count) to where its instrument is created.
	samples map[string]registration
	// labels are the attribute keys the code uses, as label names. The
	// scan cannot tell which metric gets which; a scrape can (seriesLabels).
	labels map[string]bool
	// exporters counts the Prometheus exporters found.
	exporters int
	// strategies holds each exporter's strategy by component directory.
	strategies map[string]otlptranslator.TranslationStrategyOption
	// instruments are named once every exporter's strategy is known.
	instruments []instrument
}

// instrument is one metric an instrument constructor creates.
type instrument struct {
	name, unit string
	typ        otlptranslator.MetricType
	pos        token.Position
}

// componentOf returns the entry of componentDirs that holds file.
func componentOf(file string) string {
	for _, dir := range componentDirs {
		if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
			return dir
		}
	}
	return ""
}

// name builds the Prometheus samples of every instrument.
func (ex *exported) name() error {
	shared, ok := ex.strategies[filepath.Join("..", "pkg")]
	if !ok {
		shared = defaultStrategy
	}
	for _, in := range ex.instruments {
		st, ok := ex.strategies[componentOf(in.pos.Filename)]
		if !ok {
			st = shared
		}
		namer := otlptranslator.NewMetricNamer("", st)
		prom, err := namer.Build(otlptranslator.Metric{Name: in.name, Unit: in.unit, Type: in.typ})
		if err != nil {
			return fmt.Errorf("%s: %w", in.pos, err)
		}
		samples := []string{prom}
		if in.typ == otlptranslator.MetricTypeHistogram {
			samples = []string{prom + "_bucket", prom + "_sum", prom + "_count"}
		}
		for _, sample := range samples {
			ex.samples[sample] = registration{dir: filepath.Dir(in.pos.Filename), pos: in.pos}
		}
	}
	return nil
}

// registration is where an instrument is created.
type registration struct {
	dir string // the package's directory
	pos token.Position
}

// goPackage is one directory's non-test Go files.
type goPackage struct {
	files  []*goFile
	consts map[string]constDecl
}

type goFile struct {
	pkg     *goPackage
	syntax  *ast.File
	imports map[string]string // local name → import path
}

type constDecl struct {
	value ast.Expr
	file  *goFile
}

// scanner resolves names across the scanned packages.
type scanner struct {
	fset *token.FileSet
	pkgs map[string]*goPackage // by directory
}

// scanExports parses the Go files under dirs and returns what they export.
func scanExports(dirs ...string) (*exported, error) {
	s := &scanner{fset: token.NewFileSet(), pkgs: map[string]*goPackage{}}
	for _, dir := range dirs {
		if err := s.load(dir); err != nil {
			return nil, err
		}
	}
	ex := &exported{samples: map[string]registration{}, labels: map[string]bool{},
		strategies: map[string]otlptranslator.TranslationStrategyOption{}}
	var errs []error
	for _, dir := range slices.Sorted(maps.Keys(s.pkgs)) {
		for _, f := range s.pkgs[dir].files {
			errs = append(errs, s.scanFile(f, ex)...)
		}
	}
	if ex.exporters == 0 {
		errs = append(errs, errors.New("no Prometheus exporter (otelprom.New) found"))
	}
	errs = append(errs, ex.name())
	return ex, errors.Join(errs...)
}

// load parses every package under root, skipping tests and testdata.
func (s *scanner) load(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		syntax, err := parser.ParseFile(s.fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		pkg := s.pkgs[dir]
		if pkg == nil {
			pkg = &goPackage{consts: map[string]constDecl{}}
			s.pkgs[dir] = pkg
		}
		f := &goFile{pkg: pkg, syntax: syntax, imports: map[string]string{}}
		for _, imp := range syntax.Imports {
			ipath, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			name := ipath[strings.LastIndex(ipath, "/")+1:]
			if imp.Name != nil {
				name = imp.Name.Name
			}
			f.imports[name] = ipath
		}
		for _, decl := range syntax.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if len(vs.Values) != len(vs.Names) {
					continue // iota and implicit repetition: not strings here
				}
				for i, n := range vs.Names {
					pkg.consts[n.Name] = constDecl{value: vs.Values[i], file: f}
				}
			}
		}
		pkg.files = append(pkg.files, f)
		return nil
	})
}

// scanFile records f's instruments, attribute keys and exporters.
func (s *scanner) scanFile(f *goFile, ex *exported) []error {
	var errs []error
	var stack []ast.Node
	ast.Inspect(f.syntax, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		pkgPath := f.importOf(sel.X)
		switch {
		case pkgPath == otelPrometheusPath && sel.Sel.Name == "New":
			ex.exporters++
			st, cerrs := s.checkExporter(f, call)
			errs = append(errs, cerrs...)
			ex.strategies[componentOf(s.fset.Position(call.Pos()).Filename)] = st
		case pkgPath == otelAttributePath && len(call.Args) > 0:
			// attribute.String(key, v), attribute.Int(key, v), ...:
			// keys that are not constants are not metric labels here.
			if key, err := s.str(f, call.Args[0], 0); err == nil {
				namer := otlptranslator.LabelNamer{}
				if label, err := namer.Build(key); err == nil {
					ex.labels[label] = true
				}
			}
		case pkgPath == "":
			typ, ok := instrumentTypes[sel.Sel.Name]
			if !ok || len(call.Args) == 0 {
				return true
			}
			if err := s.instrument(f, call, typ, stack, ex); err != nil {
				errs = append(errs, err)
			}
		}
		return true
	})
	return errs
}

// importOf returns the import path e names when e is a package name.
func (f *goFile) importOf(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return f.imports[id.Name]
	}
	return ""
}

// instrument records the samples of one instrument constructor call.
func (s *scanner) instrument(f *goFile, call *ast.CallExpr, typ otlptranslator.MetricType, stack []ast.Node, ex *exported) error {
	pos := s.fset.Position(call.Pos())
	names, err := s.strs(f, call.Args[0], stack)
	if err != nil {
		return fmt.Errorf("%s: the name of an instrument: %w", pos, err)
	}
	var unit string
	for _, opt := range call.Args[1:] {
		oc, ok := opt.(*ast.CallExpr)
		if !ok {
			continue
		}
		if fn, ok := oc.Fun.(*ast.SelectorExpr); ok && fn.Sel.Name == "WithUnit" && len(oc.Args) == 1 {
			if unit, err = s.str(f, oc.Args[0], 0); err != nil {
				return fmt.Errorf("%s: the unit of an instrument: %w", pos, err)
			}
		}
	}
	for _, name := range names {
		ex.instruments = append(ex.instruments, instrument{name: name, unit: unit, typ: typ, pos: pos})
	}
	return nil
}

// checkExporter returns the exporter's translation strategy, and fails on
// an option that could change names in a way the scan does not follow.
func (s *scanner) checkExporter(f *goFile, call *ast.CallExpr) (otlptranslator.TranslationStrategyOption, []error) {
	var errs []error
	strategy := defaultStrategy
	pos := s.fset.Position(call.Pos())
	for _, arg := range call.Args {
		oc, ok := arg.(*ast.CallExpr)
		var sel *ast.SelectorExpr
		if ok {
			sel, ok = oc.Fun.(*ast.SelectorExpr)
		}
		if !ok || f.importOf(sel.X) != otelPrometheusPath {
			errs = append(errs, fmt.Errorf("%s: an exporter option the scan cannot read", pos))
			continue
		}
		switch name := sel.Sel.Name; {
		case slices.Contains(exporterOptions, name):
		case name == "WithTranslationStrategy" && len(oc.Args) == 1:
			// otlptranslator's strategy constants are named as their values.
			st, ok := oc.Args[0].(*ast.SelectorExpr)
			if !ok || f.importOf(st.X) != otlptranslatorPath ||
				!slices.Contains(knownStrategies, otlptranslator.TranslationStrategyOption(st.Sel.Name)) {
				errs = append(errs, fmt.Errorf("%s: a translation strategy the scan does not know: teach it its names", pos))
				continue
			}
			strategy = otlptranslator.TranslationStrategyOption(st.Sel.Name)
		default:
			errs = append(errs, fmt.Errorf("%s: exporter option %s may change names: teach the scan", pos, name))
		}
	}
	return strategy, errs
}

// strs resolves e to the strings it can hold: a constant, or the field of
// the value of an enclosing `for _, c := range []struct{...}{...}`.
func (s *scanner) strs(f *goFile, e ast.Expr, stack []ast.Node) ([]string, error) {
	if v, err := s.str(f, e, 0); err == nil {
		return []string{v}, nil
	}
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return nil, fmt.Errorf("%s is not a string constant", exprString(e))
	}
	v, ok := sel.X.(*ast.Ident)
	if !ok {
		return nil, fmt.Errorf("%s is not a string constant", exprString(e))
	}
	for i := len(stack) - 1; i >= 0; i-- {
		rs, ok := stack[i].(*ast.RangeStmt)
		if !ok {
			continue
		}
		if val, ok := rs.Value.(*ast.Ident); !ok || val.Name != v.Name {
			continue
		}
		return s.rangeField(f, rs, sel.Sel.Name)
	}
	return nil, fmt.Errorf("%s.%s is neither a constant nor a field of a ranged-over literal", v.Name, sel.Sel.Name)
}

// rangeField returns field of every element of the []struct literal rs
// ranges over.
func (s *scanner) rangeField(f *goFile, rs *ast.RangeStmt, field string) ([]string, error) {
	lit, ok := rs.X.(*ast.CompositeLit)
	if !ok {
		return nil, errors.New("the range is not over a literal")
	}
	at, ok := lit.Type.(*ast.ArrayType)
	if !ok {
		return nil, errors.New("the range is not over a slice literal")
	}
	st, ok := at.Elt.(*ast.StructType)
	if !ok {
		return nil, errors.New("the range is not over struct literals")
	}
	index := -1
	i := 0
	for _, fl := range st.Fields.List {
		for _, n := range fl.Names {
			if n.Name == field {
				index = i
			}
			i++
		}
		if len(fl.Names) == 0 {
			i++
		}
	}
	if index < 0 {
		return nil, fmt.Errorf("no field %s", field)
	}
	var out []string
	for _, elt := range lit.Elts {
		el, ok := elt.(*ast.CompositeLit)
		if !ok {
			return nil, errors.New("an element is not a literal")
		}
		var value ast.Expr
		for j, fe := range el.Elts {
			if kv, ok := fe.(*ast.KeyValueExpr); ok {
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == field {
					value = kv.Value
				}
			} else if j == index {
				value = fe
			}
		}
		if value == nil {
			return nil, fmt.Errorf("an element has no %s", field)
		}
		v, err := s.str(f, value, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// str evaluates a constant string expression: literals, constants of the
// scanned packages (by name or package.Name) and their concatenations.
func (s *scanner) str(f *goFile, e ast.Expr, depth int) (string, error) {
	if depth > 32 {
		return "", errors.New("constants nest too deep")
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			return strconv.Unquote(e.Value)
		}
	case *ast.ParenExpr:
		return s.str(f, e.X, depth+1)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			a, err := s.str(f, e.X, depth+1)
			if err != nil {
				return "", err
			}
			b, err := s.str(f, e.Y, depth+1)
			return a + b, err
		}
	case *ast.Ident:
		if c, ok := f.pkg.consts[e.Name]; ok {
			return s.str(c.file, c.value, depth+1)
		}
	case *ast.SelectorExpr:
		if rest, ok := strings.CutPrefix(f.importOf(e.X), modulePath+"/"); ok {
			if p := s.pkgs[filepath.Join("..", filepath.FromSlash(rest))]; p != nil {
				if c, ok := p.consts[e.Sel.Name]; ok {
					return s.str(c.file, c.value, depth+1)
				}
			}
		}
	}
	return "", fmt.Errorf("%s is not a string constant", exprString(e))
}

// exprString names an expression's syntax for error messages.
func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	default:
		return fmt.Sprintf("%T", e)
	}
}

var (
	scanOnce sync.Once
	scanned  *exported
	scanErr  error
)

// skiffExports scans the components once per test binary.
func skiffExports(t *testing.T) *exported {
	t.Helper()
	scanOnce.Do(func() { scanned, scanErr = scanExports(componentDirs...) })
	if scanErr != nil {
		t.Fatalf("scanning the metric registrations: %v", scanErr)
	}
	return scanned
}

// scrapedTelemetry runs pkg/telemetry's metrics on a real Provider, records
// one of everything, and returns each sample name with its label names.
func scrapedTelemetry(t *testing.T) map[string]map[string]bool {
	t.Helper()
	p, err := telemetry.NewProvider(telemetry.ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	ctx := t.Context()
	peer := telemetry.Peer{Workload: "w", Namespace: "ns", Principal: "spiffe://cluster.local/ns/ns/sa/w", App: "w", Version: "v1", Cluster: "c"}
	labels := telemetry.Labels{
		Reporter: telemetry.ReporterWaypoint, Source: peer, Destination: peer,
		DestinationService: "svc.ns.svc.cluster.local", DestinationServiceName: "svc", DestinationServiceNamespace: "ns",
		RequestProtocol: telemetry.ProtocolHTTP, ResponseCode: "200", SecurityPolicy: telemetry.MutualTLS,
	}
	m := p.Meter("test")
	tcp, err := telemetry.NewTCPMetrics(m)
	if err != nil {
		t.Fatal(err)
	}
	tcpLabels := labels
	tcpLabels.ResponseCode, tcpLabels.RequestProtocol = "", telemetry.ProtocolTCP
	set := tcpLabels.Set()
	tcp.Opened(ctx, set)
	tcp.Bytes(ctx, set, 1, 1)
	tcp.Closed(ctx, set)
	const svc = "svc.ns.svc.cluster.local"
	wp, err := telemetry.NewWaypointMetrics(m)
	if err != nil {
		t.Fatal(err)
	}
	wp.Retry(ctx, svc, telemetry.RetryStatus)
	wp.RetryBudgetExhausted(ctx, svc)
	wp.OutlierEjection(ctx, svc, false)
	wp.OutlierEjected(ctx, svc, 1)
	rm, err := telemetry.NewRequestMetrics(m)
	if err != nil {
		t.Fatal(err)
	}
	rm.Record(ctx, labels.Attributes(), telemetry.RequestSample{Duration: time.Millisecond, RequestBytes: 1, ResponseBytes: 1})
	// Scraped as Prometheus scrapes: Istio's families are written by the
	// handler, not gathered from the registry.
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	parsed, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	families := slices.Collect(maps.Values(parsed))
	out := map[string]map[string]bool{}
	for _, mf := range families {
		names := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				names[lp.GetName()] = true
			}
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			bucket := maps.Clone(names)
			bucket["le"] = true
			out[mf.GetName()+"_bucket"], out[mf.GetName()+"_sum"], out[mf.GetName()+"_count"] = bucket, names, names
			continue
		}
		out[mf.GetName()] = names
	}
	return out
}

// TestScanMatchesScrape checks the scan against a real exporter: the
// samples it finds registered in pkg/telemetry are exactly those a
// Provider writes once each metric has a value, and their labels are
// among the keys the scan found.
func TestScanMatchesScrape(t *testing.T) {
	ex := skiffExports(t)
	scraped := scrapedTelemetry(t)
	var fromScan []string
	for sample, reg := range ex.samples {
		if reg.dir == telemetryDir {
			fromScan = append(fromScan, sample)
		}
	}
	slices.Sort(fromScan)
	fromScrape := slices.Sorted(maps.Keys(scraped))
	if !slices.Equal(fromScan, fromScrape) {
		t.Errorf("the scan of %s finds\n%q\na scrape has\n%q", telemetryDir, fromScan, fromScrape)
	}
	for sample, labels := range scraped {
		for l := range labels {
			if !ex.labels[l] && l != "le" {
				t.Errorf("%s has label %s, which the scan did not find", sample, l)
			}
		}
	}
}

// TestScanExports pins what the scan must find, so that a scan that finds
// nothing cannot pass the dashboard test vacuously, and shows that names
// are each exporter's.
func TestScanExports(t *testing.T) {
	ex := skiffExports(t)
	if ex.exporters < 2 {
		t.Errorf("found %d Prometheus exporters; want istiod-lite's and pkg/telemetry's", ex.exporters)
	}
	for _, want := range []string{
		"istio_tcp_connections_opened_total", "istio_requests_total", "istio_request_duration_milliseconds_bucket",
		"skiff_waypoint_outlier_ejected", "skiff_rate_limited_requests_total", "pilot_xds",
		"pilot_xds_pushes", "pilot_total_xds_rejects", "citadel_server_csr_sign_duration_bucket", "istio_cni_install_ready",
		"skiff_cni_enrolment_failures_total",
	} {
		if _, ok := ex.samples[want]; !ok {
			t.Errorf("the scan does not find %s", want)
		}
	}
	// Names each exporter's strategy rules out: istiod-lite's writes
	// Istio's names as they are, pkg/telemetry's adds "_total" to counters.
	for _, not := range []string{"citadel_server_csr_sign_duration_seconds_bucket", "pilot_xds_rejects_total", "pilot_xds_pushes_total", "skiff_cni_enrolment_failures", "istio_requests_total_total"} {
		if _, ok := ex.samples[not]; ok {
			t.Errorf("the scan finds %s, which no exporter writes", not)
		}
	}
	for _, want := range []string{"reporter", "destination_workload", "response_code", "reason", "policy", "type", "operation", "outcome"} {
		if !ex.labels[want] {
			t.Errorf("the scan does not find label %s", want)
		}
	}
}

// checker decides whether a query's names exist.
type checker struct {
	ex *exported
	// series has the label names of the samples a scrape has seen; labels
	// of other samples are checked against every key the code uses.
	series map[string]map[string]bool
}

func newChecker(t *testing.T) *checker {
	t.Helper()
	return &checker{ex: skiffExports(t), series: scrapedTelemetry(t)}
}

// labelOK says whether label can be on sample.
func (c *checker) labelOK(sample, label string) bool {
	if slices.Contains(targetLabels, label) {
		return true
	}
	if labels, ok := c.series[sample]; ok {
		return labels[label]
	}
	return c.ex.labels[label] || (label == "le" && strings.HasSuffix(sample, "_bucket"))
}

// check returns an error for each name in expr that Skiff does not export.
func (c *checker) check(expr string) []error {
	refs, err := readPromQL(expr)
	if err != nil {
		return []error{err}
	}
	var errs []error
	var metrics []string
	for _, sel := range refs.selectors {
		if sel.metric == "" {
			errs = append(errs, fmt.Errorf("a selector without a metric name: %v", sel.labels))
			continue
		}
		metrics = append(metrics, sel.metric)
		if _, ok := c.ex.samples[sel.metric]; !ok {
			errs = append(errs, fmt.Errorf("metric %s is not one Skiff exports", sel.metric))
			continue
		}
		for _, l := range sel.labels {
			if !c.labelOK(sel.metric, l) {
				errs = append(errs, fmt.Errorf("metric %s has no label %s", sel.metric, l))
			}
		}
	}
	for _, l := range refs.grouping {
		if !slices.ContainsFunc(metrics, func(m string) bool { return c.labelOK(m, l) }) {
			errs = append(errs, fmt.Errorf("none of %v has label %s", metrics, l))
		}
	}
	return errs
}

// Grafana's dashboard JSON, the parts checked.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []dashboardVariable `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboardVariable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

type dashboardPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	// Panels are a collapsed row's.
	Panels []dashboardPanel `json:"panels"`
}

// datasourceVar is how every query names its data source: the dashboard's
// Prometheus data source variable.
const datasourceVar = "${datasource}"

// query is one PromQL expression of a dashboard and where it is.
type query struct {
	where string
	expr  string
	// labels are names a variable query lists values of.
	labels []string
}

// loadDashboard parses a dashboard and returns it with its queries.
func loadDashboard(data []byte) (*dashboard, []query, error) {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, nil, err
	}
	var queries []query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, nil, fmt.Errorf("variable %s: query: %w", v.Name, err)
			}
			q = obj.Query
		}
		vq, err := variableQuery(q)
		if err != nil {
			return nil, nil, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		vq.where = "variable " + v.Name
		queries = append(queries, vq)
	}
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			for _, tg := range p.Targets {
				queries = append(queries, query{where: fmt.Sprintf("panel %q %s", p.Title, tg.RefID), expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return &d, queries, nil
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// variableQuery reads the Prometheus data source's variable queries:
// label_values(selector, label) and query_result(expr).
func variableQuery(q string) (query, error) {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "label_values("); ok {
		inner, ok = strings.CutSuffix(inner, ")")
		i := strings.LastIndex(inner, ",")
		if !ok || i < 0 {
			return query{}, fmt.Errorf("label_values without a selector and a label: %q", q)
		}
		label := strings.TrimSpace(inner[i+1:])
		if !labelName.MatchString(label) {
			return query{}, fmt.Errorf("label_values: %q is not a label name", label)
		}
		return query{expr: inner[:i], labels: []string{label}}, nil
	}
	if inner, ok := strings.CutPrefix(q, "query_result("); ok {
		if inner, ok = strings.CutSuffix(inner, ")"); ok {
			return query{expr: inner}, nil
		}
	}
	return query{}, fmt.Errorf("a variable query this test does not read: %q", q)
}

// TestDashboards checks every dashboard the chart ships: well-formed for
// Grafana, on the Prometheus data source variable, and querying only
// metrics and labels Skiff exports.
func TestDashboards(t *testing.T) {
	files, err := filepath.Glob(dashboardGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards match %s: %v", dashboardGlob, err)
	}
	c := newChecker(t)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			d, queries, err := loadDashboard(data)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			checkDashboard(t, d)
			if len(queries) == 0 {
				t.Fatal("no queries")
			}
			for _, q := range queries {
				for _, err := range c.check(q.expr) {
					t.Errorf("%s: %v\n\t%s", q.where, err, q.expr)
				}
				for _, l := range q.labels {
					refs, _ := readPromQL(q.expr)
					for _, sel := range refs.selectors {
						if !c.labelOK(sel.metric, l) {
							t.Errorf("%s: metric %s has no label %s", q.where, sel.metric, l)
						}
					}
				}
				checkStandardPromQL(t, q)
			}
		})
	}
}

// checkDashboard checks the dashboard's structure as Grafana needs it.
func checkDashboard(t *testing.T, d *dashboard) {
	t.Helper()
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: want both", d.Title, d.UID)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current one (36 or more)", d.SchemaVersion)
	}
	vars := map[string]dashboardVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("variable datasource = %+v; want a Prometheus data source variable", ds)
	}
	for _, name := range []string{"namespace", "workload"} {
		if v, ok := vars[name]; !ok || v.Type != "query" {
			t.Errorf("no query variable %s", name)
		} else if v.Datasource == nil || v.Datasource.UID != datasourceVar {
			t.Errorf("variable %s: data source %+v, want %s", name, v.Datasource, datasourceVar)
		}
	}
	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			if prev, ok := ids[p.ID]; ok || p.ID == 0 {
				t.Errorf("panel %q: id %d is not unique (%q)", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
				t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, g)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != datasourceVar {
				t.Errorf("panel %q: data source %+v, want %s", p.Title, p.Datasource, datasourceVar)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			refIDs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != datasourceVar {
					t.Errorf("panel %q %s: data source %+v, want %s", p.Title, tg.RefID, tg.Datasource, datasourceVar)
				}
				if tg.RefID == "" || refIDs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: a query with refId %q (repeated or empty) or no expr", p.Title, tg.RefID)
				}
				refIDs[tg.RefID] = true
			}
		}
	}
	walk(d.Panels)
}

// checkStandardPromQL holds queries to the usual forms: ranges are
// Grafana's $__rate_interval (or the whole $__range), and histogram
// buckets are only read through histogram_quantile over sum by (le).
func checkStandardPromQL(t *testing.T, q query) {
	t.Helper()
	refs, err := readPromQL(q.expr)
	if err != nil {
		return // reported by the checker
	}
	for _, r := range refs.ranges {
		if r != "$__rate_interval" && r != "$__range" {
			t.Errorf("%s: range [%s]; use [$__rate_interval] (or [$__range] for a total)", q.where, r)
		}
	}
	for _, sel := range refs.selectors {
		if strings.HasSuffix(sel.metric, "_bucket") &&
			(!strings.Contains(q.expr, "histogram_quantile(") || !slices.Contains(refs.grouping, "le")) {
			t.Errorf("%s: %s outside histogram_quantile over sum by (le)", q.where, sel.metric)
		}
	}
}

// TestCheckerCatches shows the dashboard check is not vacuous: wrong
// metric names, including names with suffixes an exporter does not add
// and without those it does, and labels a metric does not have, fail.
func TestCheckerCatches(t *testing.T) {
	c := newChecker(t)
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{expr: `sum by (type) (rate(pilot_xds_pushes[$__rate_interval]))`, ok: true},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[$__rate_interval])))`, ok: true},
		{expr: `sum by (instance) (skiff_cni_pods_enrolled)`, ok: true},
		{expr: `sum(rate(pilot_xds_pushes_total[$__rate_interval]))`},
		{expr: `sum(rate(skiff_cni_enrolment_failures[$__rate_interval]))`},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(citadel_server_csr_sign_duration_seconds_bucket[$__rate_interval])))`},
		{expr: `rate(istio_requests[$__rate_interval])`},
		{expr: `istio_request_duration_milliseconds`},
		{expr: `sum(rate(istio_requests_total{destination_workload_namspace="x"}[$__rate_interval]))`},
		{expr: `sum by (response_code) (rate(istio_tcp_sent_bytes_total[$__rate_interval]))`},
		{expr: `sum by (le) (istio_requests_total)`},
		{expr: `{reporter="waypoint"}`},
		{expr: `sum(rate(istio_requests_total[5m]`},
	} {
		errs := c.check(tc.expr)
		if ok := len(errs) == 0; ok != tc.ok {
			t.Errorf("check(%s) = %v; want ok %v", tc.expr, errs, tc.ok)
		}
	}
}

// TestIstioDashboardQueries checks queries of the kind Istio's own
// dashboards (Grafana.com 7630, workload, and 7636, service) run against
// Skiff's names and labels: every name must exist, on that metric.
func TestIstioDashboardQueries(t *testing.T) {
	c := newChecker(t)
	for _, expr := range []string{
		// Incoming request volume and success rate of a workload.
		`round(sum(irate(istio_requests_total{reporter=~"$qrep",destination_workload_namespace=~"$namespace",destination_workload=~"$workload"}[$__rate_interval])), 0.001)`,
		`sum(irate(istio_requests_total{reporter=~"$qrep",destination_workload_namespace=~"$namespace",destination_workload=~"$workload",response_code!~"5.*"}[$__rate_interval])) / sum(irate(istio_requests_total{reporter=~"$qrep",destination_workload_namespace=~"$namespace",destination_workload=~"$workload"}[$__rate_interval]))`,
		// Request duration, milliseconds variant.
		`histogram_quantile(0.90, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"$qrep",destination_workload=~"$workload", destination_workload_namespace=~"$namespace"}[$__rate_interval])) by (le)) / 1000`,
		// By source and response code, split on mutual TLS.
		`round(sum(irate(istio_requests_total{connection_security_policy="mutual_tls", destination_workload_namespace=~"$namespace", destination_workload=~"$workload", reporter=~"$qrep", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace, response_code), 0.001)`,
		`histogram_quantile(0.50, sum(irate(istio_request_bytes_bucket{reporter=~"$qrep", destination_workload=~"$workload", source_workload=~"$srcwl"}[$__rate_interval])) by (source_workload, source_workload_namespace, le))`,
		// TCP traffic, and the service dashboard's outgoing requests.
		`sum(irate(istio_tcp_sent_bytes_total{reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload"}[$__rate_interval])) + sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload"}[$__rate_interval]))`,
		`round(sum(irate(istio_tcp_connections_opened_total{reporter=~"$qrep", destination_service=~"$service"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`,
		`round(sum(irate(istio_requests_total{destination_principal=~"spiffe.*", reporter="source", destination_service=~"$dstsvc"}[$__rate_interval])) by (destination_service, response_code), 0.001)`,
		`sum(istio_requests_total{reporter="destination", destination_service="$service"}) by (destination_cluster)`,
	} {
		for _, err := range c.check(expr) {
			t.Errorf("%v\n\t%s", err, expr)
		}
	}
}

// TestDashboardsConfigMap renders the all-in-one chart with dashboards on
// and checks the ConfigMap the Grafana sidecar loads: its label, and the
// dashboards byte for byte, within what Kubernetes accepts.
func TestDashboardsConfigMap(t *testing.T) {
	helm := helmBinary(t)
	files, err := filepath.Glob(dashboardGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards match %s: %v", dashboardGlob, err)
	}
	for _, tc := range []struct {
		name        string
		set         []string
		label       [2]string
		namespace   string
		annotations map[string]string
	}{
		{name: "defaults", set: []string{"dashboards.enabled=true"}, label: [2]string{"grafana_dashboard", "1"}, namespace: namespace},
		{
			name:        "own label, namespace and folder",
			set:         []string{"dashboards.enabled=true", "dashboards.label=skiff.dev/dashboard", "dashboards.labelValue=yes", "dashboards.namespace=monitoring", "dashboards.annotations.grafana_folder=Skiff"},
			label:       [2]string{"skiff.dev/dashboard", "yes"},
			namespace:   "monitoring",
			annotations: map[string]string{"grafana_folder": "Skiff"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cms []*unstructured.Unstructured
			for _, o := range render(t, helm, tc.set) {
				if o.GetKind() == "ConfigMap" && o.GetLabels()[tc.label[0]] != "" {
					cms = append(cms, o)
				}
			}
			if len(cms) != 1 {
				t.Fatalf("%d ConfigMaps labelled %s; want 1", len(cms), tc.label[0])
			}
			cm := cms[0]
			if got := cm.GetLabels()[tc.label[0]]; got != tc.label[1] {
				t.Errorf("label %s=%q; want %q", tc.label[0], got, tc.label[1])
			}
			if cm.GetNamespace() != tc.namespace {
				t.Errorf("namespace %q; want %q", cm.GetNamespace(), tc.namespace)
			}
			for k, v := range tc.annotations {
				if cm.GetAnnotations()[k] != v {
					t.Errorf("annotation %s=%q; want %q", k, cm.GetAnnotations()[k], v)
				}
			}
			for _, err := range validation.IsQualifiedName(tc.label[0]) {
				t.Errorf("label key %q: %s", tc.label[0], err)
			}
			for _, err := range validation.IsValidLabelValue(tc.label[1]) {
				t.Errorf("label value %q: %s", tc.label[1], err)
			}
			data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
			size := 0
			for _, file := range files {
				key := filepath.Base(file)
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				got, ok := data[key]
				if !ok {
					t.Errorf("no key %s in %v", key, slices.Sorted(maps.Keys(data)))
					continue
				}
				// YAML block scalars end the text with one newline.
				if strings.TrimRight(got, "\n") != strings.TrimRight(string(want), "\n") {
					t.Errorf("%s differs from %s", key, file)
				}
				if !json.Valid([]byte(got)) {
					t.Errorf("%s is not valid JSON", key)
				}
				for _, err := range validation.IsConfigMapKey(key) {
					t.Errorf("key %q: %s", key, err)
				}
				size += len(key) + len(got)
			}
			// The apiserver refuses ConfigMaps over 1 MiB.
			if size > 1<<20 {
				t.Errorf("the dashboards take %d bytes; a ConfigMap holds 1 MiB", size)
			}
		})
	}
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		for _, o := range render(t, helm, nil) {
			if o.GetKind() == "ConfigMap" {
				t.Errorf("ConfigMap %s rendered with dashboards off", o.GetName())
			}
		}
	})
}

// promqlNames are the names a PromQL expression refers to.
type promqlNames struct {
	// selectors are the vector selectors: metric names with the label
	// names of their matchers.
	selectors []vectorSelector
	// grouping are the label names of by, without, on, ignoring,
	// group_left and group_right clauses.
	grouping []string
	// ranges are the insides of range and subquery brackets.
	ranges []string
}

type vectorSelector struct {
	metric string
	labels []string
}

// promqlKeywords are identifiers that are neither metrics nor functions.
var promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

// groupingKeywords are followed by a parenthesized list of label names.
var groupingKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

func isIdentStart(b byte) bool {
	return b == '_' || b == ':' || ('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z')
}

func isIdentByte(b byte) bool { return isIdentStart(b) || ('0' <= b && b <= '9') }

// readPromQL lexes a PromQL expression, with Grafana's $variables, into
// the names it refers to. It is a lexer with bracket matching, not a
// parser: enough to find every name, with an error for unbalanced
// brackets, unterminated strings and characters PromQL has no use for.
func readPromQL(expr string) (promqlNames, error) {
	var refs promqlNames
	// stack holds the open brackets: '(' , '{', or 'L' for a label list.
	var stack []byte
	labelList := false // the last token asks for a label list next
	current := -1      // the selector a '{' right here belongs to, or -1
	i := 0
	skipSpace := func(j int) int {
		for j < len(expr) && strings.IndexByte(" \t\r\n", expr[j]) >= 0 {
			j++
		}
		return j
	}
	for {
		i = skipSpace(i)
		if i >= len(expr) {
			break
		}
		b := expr[i]
		wantList := false
		attach := -1
		switch {
		case b == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
			continue
		case b == '"' || b == '\'' || b == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != b; j++ {
				if expr[j] == '\\' && b != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return refs, fmt.Errorf("unterminated string at %d", i)
			}
			i = j + 1
		case b == '$':
			j := i + 1
			if j < len(expr) && expr[j] == '{' {
				k := strings.IndexByte(expr[j:], '}')
				if k < 0 {
					return refs, fmt.Errorf("unterminated ${ at %d", i)
				}
				j += k + 1
			} else {
				for j < len(expr) && isIdentByte(expr[j]) {
					j++
				}
			}
			i = j
		case '0' <= b && b <= '9' || b == '.':
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(b):
			j := i
			for j < len(expr) && isIdentByte(expr[j]) {
				j++
			}
			word := expr[i:j]
			i = j
			lower := strings.ToLower(word)
			next := skipSpace(i)
			nextWord := ""
			for k := next; k < len(expr) && isIdentByte(expr[k]); k++ {
				nextWord = expr[next : k+1]
			}
			switch {
			case len(stack) > 0 && (stack[len(stack)-1] == '{' || stack[len(stack)-1] == 'L'):
				if stack[len(stack)-1] == 'L' {
					refs.grouping = append(refs.grouping, word)
				} else if current >= 0 {
					refs.selectors[current].labels = append(refs.selectors[current].labels, word)
				}
			case slices.Contains(groupingKeywords, lower):
				wantList = true
			case slices.Contains(promqlKeywords, lower):
			case next < len(expr) && expr[next] == '(',
				slices.Contains([]string{"by", "without"}, strings.ToLower(nextWord)):
				// a function or an aggregation
			default:
				refs.selectors = append(refs.selectors, vectorSelector{metric: word})
				attach = len(refs.selectors) - 1
			}
		case b == '(':
			if labelList {
				stack = append(stack, 'L')
			} else {
				stack = append(stack, '(')
			}
			i++
		case b == '{':
			if current < 0 {
				refs.selectors = append(refs.selectors, vectorSelector{})
				current = len(refs.selectors) - 1
			}
			stack = append(stack, '{')
			i++
			labelList = false
			continue // current stays the selector of this brace
		case b == ')' || b == '}':
			open := byte('{')
			if b == ')' {
				open = '('
			}
			if len(stack) == 0 || (stack[len(stack)-1] != open && !(open == '(' && stack[len(stack)-1] == 'L')) {
				return refs, fmt.Errorf("unbalanced %q at %d", b, i)
			}
			stack = stack[:len(stack)-1]
			i++
		case b == '[':
			k := strings.IndexByte(expr[i:], ']')
			if k < 0 {
				return refs, fmt.Errorf("unterminated [ at %d", i)
			}
			refs.ranges = append(refs.ranges, strings.TrimSpace(expr[i+1:i+k]))
			i += k + 1
		case strings.IndexByte("+-*/%^=!<>,@~", b) >= 0:
			i++
		default:
			return refs, fmt.Errorf("unexpected %q at %d", b, i)
		}
		labelList = wantList
		if len(stack) == 0 || stack[len(stack)-1] != '{' {
			current = attach
		}
	}
	if len(stack) > 0 {
		return refs, fmt.Errorf("%d unclosed brackets", len(stack))
	}
	return refs, nil
}

func TestReadPromQL(t *testing.T) {
	for _, tc := range []struct {
		expr      string
		selectors []vectorSelector
		grouping  []string
		ranges    []string
		err       bool
	}{
		{expr: `up`, selectors: []vectorSelector{{metric: "up"}}},
		{
			expr:      `sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter="waypoint", response_code!~"5.."}[$__rate_interval]))`,
			selectors: []vectorSelector{{metric: "istio_request_duration_milliseconds_bucket", labels: []string{"reporter", "response_code"}}},
			grouping:  []string{"le", "destination_workload"},
			ranges:    []string{"$__rate_interval"},
		},
		{
			expr:      `sum(rate(a_total{x=~"$ns"}[5m])) by (x) / on (x) group_left (y) b{ y = "by(z)" }`,
			selectors: []vectorSelector{{metric: "a_total", labels: []string{"x"}}, {metric: "b", labels: []string{"y"}}},
			grouping:  []string{"x", "x", "y"},
			ranges:    []string{"5m"},
		},
		{
			expr:      "histogram_quantile(0.99, sum without (pod) (rate(h_bucket[1m:10s]))) > bool 1e-3 # comment with metric_name\n or vector(0)",
			selectors: []vectorSelector{{metric: "h_bucket"}},
			grouping:  []string{"pod"},
			ranges:    []string{"1m:10s"},
		},
		{expr: `label_replace(m, "dst", "$1", "src", "(.*)") offset 5m`, selectors: []vectorSelector{{metric: "m"}}},
		{expr: `{__name__="x"}`, selectors: []vectorSelector{{labels: []string{"__name__"}}}},
		{expr: `a or b unless c and ${var:regex}`, selectors: []vectorSelector{{metric: "a"}, {metric: "b"}, {metric: "c"}}},
		{expr: `sum(rate(x[5m])`, err: true},
		{expr: `x{a="b}`, err: true},
		{expr: `x)`, err: true},
		{expr: `x[5m`, err: true},
		{expr: `x{a="b"]`, err: true},
		{expr: `x ; y`, err: true},
	} {
		refs, err := readPromQL(tc.expr)
		if (err != nil) != tc.err {
			t.Errorf("readPromQL(%q) error %v; want error %v", tc.expr, err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if !slices.EqualFunc(refs.selectors, tc.selectors, func(a, b vectorSelector) bool {
			return a.metric == b.metric && slices.Equal(a.labels, b.labels)
		}) || !slices.Equal(refs.grouping, tc.grouping) || !slices.Equal(refs.ranges, tc.ranges) {
			t.Errorf("readPromQL(%q) = %+v; want selectors %+v grouping %q ranges %q", tc.expr, refs, tc.selectors, tc.grouping, tc.ranges)
		}
	}
}

// FuzzPromQLRefs checks the lexer on any input: it returns, never panics,
// and every name it reports is an identifier found in the input.
func FuzzReadPromQL(f *testing.F) {
	f.Add(`sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[$__rate_interval]))`)
	f.Add(`a / on (x) group_left (y) b{y=~"$v", z!="\""} # c`)
	f.Add("x{a=`raw`} offset 5m @ 100")
	f.Add(`${a:regex} [[b]] ((( }}}`)
	f.Fuzz(func(t *testing.T, expr string) {
		refs, err := readPromQL(expr)
		if err != nil {
			return
		}
		var names []string
		for _, s := range refs.selectors {
			if s.metric != "" {
				names = append(names, s.metric)
			}
			names = append(names, s.labels...)
		}
		names = append(names, refs.grouping...)
		for _, n := range names {
			if !labelName.MatchString(strings.ReplaceAll(n, ":", "_")) || !strings.Contains(expr, n) {
				t.Fatalf("readPromQL(%q) reports %q, not an identifier of the input", expr, n)
			}
		}
		for _, r := range refs.ranges {
			if !strings.Contains(expr, r) {
				t.Fatalf("readPromQL(%q) reports range %q, not in the input", expr, r)
			}
		}
	})
}

// FuzzVariableQuery checks the variable query reader: an error, or a label
// name and an expression taken from the query.
func FuzzVariableQuery(f *testing.F) {
	f.Add(`label_values(istio_tcp_connections_opened_total{destination_workload_namespace=~"$namespace"}, destination_workload)`)
	f.Add(`query_result(sum(x) by (y))`)
	f.Add(`label_values(,)`)
	f.Fuzz(func(t *testing.T, q string) {
		vq, err := variableQuery(q)
		if err != nil {
			return
		}
		if !strings.Contains(q, vq.expr) {
			t.Fatalf("variableQuery(%q) = %q, not part of the query", q, vq.expr)
		}
		for _, l := range vq.labels {
			if !labelName.MatchString(l) {
				t.Fatalf("variableQuery(%q) label %q", q, l)
			}
		}
	})
}
