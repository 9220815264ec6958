package gatewayapi

import (
	"testing"

	"sigs.k8s.io/gateway-api/pkg/features"
)

func TestInAProfile(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   []features.FeatureName
		want bool
	}{
		{"mesh core", []features.FeatureName{features.SupportMesh, features.SupportHTTPRoute}, true},
		{"grpc core", []features.FeatureName{features.SupportMesh, features.SupportGRPCRoute}, true},
		{"mesh extended", []features.FeatureName{features.SupportMesh, features.SupportHTTPRoute, features.SupportMeshConsumerRoute}, true},
		// HTTP and gRPC routes together belong to neither profile.
		{"both routes", []features.FeatureName{features.SupportMesh, features.SupportHTTPRoute, features.SupportGRPCRoute}, false},
		{"an HTTPRoute extended feature", []features.FeatureName{features.SupportMesh, features.SupportHTTPRoute, features.SupportHTTPRouteResponseHeaderModification}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inAProfile(tc.fs); got != tc.want {
				t.Errorf("inAProfile(%v) = %v, want %v", tc.fs, got, tc.want)
			}
		})
	}
}

func TestTestsPath(t *testing.T) {
	for _, tc := range []struct{ report, want string }{
		{"r/skiff-mesh-report.yaml", "r/skiff-mesh-tests.yaml"},
		{"other.yaml", "other.yaml-tests.yaml"},
	} {
		if got := testsPath(tc.report); got != tc.want {
			t.Errorf("testsPath(%q) = %q, want %q", tc.report, got, tc.want)
		}
	}
}

func TestSupportedFeaturesCoverEveryMeshTest(t *testing.T) {
	// Every feature the profiles list is claimed: nothing is exempt.
	claimed := map[features.FeatureName]bool{}
	for _, f := range supportedFeatures() {
		claimed[f] = true
	}
	for _, p := range meshProfiles {
		for _, f := range append(p.CoreFeatures.UnsortedList(), p.ExtendedFeatures.UnsortedList()...) {
			if !claimed[f] {
				t.Errorf("profile %s's feature %s is not claimed", p.Name, f)
			}
		}
	}
}
