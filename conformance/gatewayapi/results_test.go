package gatewayapi

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"
)

// testResults records the outcome of every test the suite ran or skipped.
//
// The suite's own report counts a test under a profile only when all of
// the test's features belong to that profile. Mesh tests that also need an
// HTTPRoute extended feature (MeshConsumerRoute, MeshFrontend, MeshPorts,
// the 303/307/308 redirects, ...) appear in no profile: the report can say
// "Extended tests succeeded" while one of them failed. This list, written
// next to the report, leaves nothing out.
type testResults struct {
	mu      sync.Mutex
	results []testResult
}

// testResult is one test's line in the per-test results file.
type testResult struct {
	Name        string   `json:"name"`
	Result      string   `json:"result"` // passed, failed or skipped
	Features    []string `json:"features"`
	Provisional bool     `json:"provisional,omitempty"`
	// InProfileReport says whether the suite's report counts this test.
	InProfileReport bool `json:"inProfileReport"`
}

// meshProfiles are the profiles the harness runs, for InProfileReport.
var meshProfiles = []suite.ConformanceProfile{suite.MeshHTTPConformanceProfile, suite.MeshGRPCConformanceProfile}

// record notes the outcome of test, whose (sub)test is t; it is called from
// the test's clean-up, when its parallel subtests have finished.
func (r *testResults) record(t *testing.T, test suite.ConformanceTest) {
	res := "passed"
	switch {
	case t.Failed():
		res = "failed"
	case t.Skipped():
		res = "skipped"
	}
	var names []string
	for _, f := range test.Features {
		names = append(names, string(f))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, testResult{
		Name:            test.ShortName,
		Result:          res,
		Features:        names,
		Provisional:     test.Provisional,
		InProfileReport: inAProfile(test.Features),
	})
}

// inAProfile reports whether every feature is in one of the mesh profiles.
func inAProfile(fs []features.FeatureName) bool {
	for _, p := range meshProfiles {
		if !slices.ContainsFunc(fs, func(f features.FeatureName) bool {
			return !p.CoreFeatures.Has(f) && !p.ExtendedFeatures.Has(f)
		}) {
			return true
		}
	}
	return false
}

// write writes the mesh tests' results, sorted by name, to path. Tests of
// the gateway profiles, which the harness never runs, are left out.
func (r *testResults) write(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var mesh []testResult
	for _, tr := range r.results {
		if slices.Contains(tr.Features, string(features.SupportMesh)) {
			mesh = append(mesh, tr)
		}
	}
	slices.SortFunc(mesh, func(a, b testResult) int { return strings.Compare(a.Name, b.Name) })
	b, err := yaml.Marshal(struct {
		Tests []testResult `json:"tests"`
	}{mesh})
	if err != nil {
		return fmt.Errorf("marshalling the results: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// testsPath is the per-test results file next to the report at path.
func testsPath(report string) string {
	return strings.TrimSuffix(report, "-report.yaml") + "-tests.yaml"
}
