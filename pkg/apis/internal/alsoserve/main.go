// Command alsoserve adds older API versions to a generated CRD manifest:
// each is served with the storage version's schema, so objects written in
// it are stored, read and watched as the storage version (the apiserver
// changes only their apiVersion). Istio serves AuthorizationPolicy in
// v1beta1 alongside v1 this way, and manifests written for it keep working.
//
//	alsoserve <crd.yaml> <version>...
package main

import (
	"fmt"
	"maps"
	"os"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: alsoserve <crd.yaml> <version>...")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "alsoserve:", err)
		os.Exit(1)
	}
}

func run(path string, names []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// A generic document, so that whatever controller-gen wrote is kept
	// as it is.
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	var storage map[string]any
	existing := map[string]bool{}
	for _, v := range versions {
		v, _ := v.(map[string]any)
		if name, _ := v["name"].(string); name != "" {
			existing[name] = true
		}
		if v["storage"] == true {
			storage = v
		}
	}
	if storage == nil {
		return fmt.Errorf("%s: no storage version", path)
	}
	for _, name := range names {
		if existing[name] {
			return fmt.Errorf("%s: version %s already exists", path, name)
		}
		v := maps.Clone(storage) // shared, unchanged values: the output is written once
		v["name"], v["served"], v["storage"] = name, true, false
		versions = append(versions, v)
	}
	spec["versions"] = versions
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte("---\n"), out...), 0o644)
}
