package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// TestMain brings the local cluster up (or reuses it), loads this
// checkout's echo and toolbox images (the load generator) and Skiff's
// images into its nodes, and installs Skiff from its charts, once for all
// scenarios. SKIFF_REUSE_INSTALL=1 skips all that and uses the cluster and
// Skiff as they are (for a scenario run again while writing it).
func TestMain(m *testing.M) {
	if os.Getenv("SKIFF_E2E") == "1" && os.Geteuid() == 0 && os.Getenv("SKIFF_REUSE_INSTALL") != "1" {
		if err := setUp(); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: set-up:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func setUp() error {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	return kubetest.SetUp("reliability", repo, "skiff.local/echo,skiff.local/toolbox")
}
