// Command skiff-cni is Skiff's chained CNI plugin: it enrols ambient-mesh
// pods with the node agent before their containers start. The node agent's
// installer copies it into the host's CNI bin directory.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/skiffmesh/skiff/cni/internal/plugin"
)

func main() {
	p := plugin.New(os.Stdout, os.Stderr)
	skel.PluginMainFuncs(p.Funcs(), plugin.SupportedVersions, "skiff-cni: Skiff's chained CNI plugin for in-pod traffic redirection")
}
