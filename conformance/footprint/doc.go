// Package footprint measures what Skiff costs on every node of the local
// cluster: the memory, goroutines and handles of ztunnel, the CNI node
// agent and istiod-lite at 0, 10 and 100 enrolled pods per node, and how
// they grow while pods are replaced under traffic. make bench-footprint
// runs it and prints the report.
//
//	SKIFF_E2E=1 SKIFF_FOOTPRINT_REPORT=report.txt go test ./conformance/footprint -v -timeout 90m   (or make bench-footprint)
package footprint
