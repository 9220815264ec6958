package apis

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

// Manifests holds the CRD manifests, one file per CRD, under crds/.
//
//go:embed crds/*.yaml
var Manifests embed.FS

// CRDs parses every embedded manifest, sorted by name.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	entries, err := fs.ReadDir(Manifests, "crds")
	if err != nil {
		return nil, fmt.Errorf("apis: %w", err)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, e := range entries {
		data, err := Manifests.ReadFile(path.Join("crds", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("apis: %w", err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return nil, fmt.Errorf("apis: %s: %w", e.Name(), err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("apis: %s: kind %q, want CustomResourceDefinition", e.Name(), crd.Kind)
		}
		out = append(out, crd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// AddToScheme registers Skiff's API types and the Gateway API v1 types.
func AddToScheme(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{securityv1.AddToScheme, policyv1alpha1.AddToScheme, gatewayv1.Install} {
		if err := add(s); err != nil {
			return fmt.Errorf("apis: %w", err)
		}
	}
	return nil
}
