// Command manifest prints the test apps' manifests that the end-to-end
// suites use, for scripts such as the demo:
//
//	manifest echo NAMESPACE REPLICAS [SERVICE-ACCOUNT]
//	manifest client NAMESPACE NODE [SERVICE-ACCOUNT]
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		fmt.Fprintln(os.Stderr, "usage: manifest echo NAMESPACE REPLICAS [SA] | manifest client NAMESPACE NODE [SA]")
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) < 3 || len(args) > 4 {
		return fmt.Errorf("want 3 or 4 arguments, got %d", len(args))
	}
	sa := ""
	if len(args) == 4 {
		sa = args[3]
	}
	switch args[0] {
	case "echo":
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 1 {
			return fmt.Errorf("replicas %q: want a positive number", args[2])
		}
		fmt.Print(kubetest.Echo(args[1], n, sa))
	case "client":
		fmt.Print(kubetest.Client(args[1], args[2], sa))
	default:
		return fmt.Errorf("unknown manifest %q", args[0])
	}
	return nil
}
