package footprint

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// TestMain brings the local cluster up (or reuses it), loads the echo
// image and Skiff's into its nodes, and installs Skiff from its charts.
// SKIFF_REUSE_INSTALL=1 uses the cluster and Skiff as they are.
func TestMain(m *testing.M) {
	if os.Getenv("SKIFF_E2E") == "1" && os.Geteuid() == 0 && os.Getenv("SKIFF_REUSE_INSTALL") != "1" {
		repo, err := filepath.Abs("../..")
		if err == nil {
			err = kubetest.SetUp("footprint", repo, "skiff.local/echo")
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "footprint: set-up:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}
