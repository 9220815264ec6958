// Package reliability is the reliability suite of issue 14: Skiff on the
// local cluster (conformance/cluster), installed from its charts, under
// faults a platform team asks about before adopting a mesh: ztunnel
// crashing or rolled, a waypoint rolled, the control plane away, short
// certificate lifetimes, the CNI node agent restarted, pods churned, the
// apiserver gone. Each scenario runs real traffic during the fault (the
// echo app's load generator in pods of the mesh) and logs its figure,
// "failed N of M", on a line that starts with "figure:"; its pass bar is
// that figure, never a timing. Every scenario puts the cluster back as it
// found it, pass or fail.
//
//	SKIFF_E2E=1 go test ./conformance/reliability -v -timeout 60m   (or make reliability)
package reliability
