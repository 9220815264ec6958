package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
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
	for _, step := range [][]string{
		{"conformance/cluster/up.sh"},
		{"go", "run", "./conformance/cmd/skiff-images", "-only", "skiff.local/echo,skiff.local/toolbox"},
		{"conformance/cluster/install-skiff.sh"},
	} {
		start := time.Now()
		cmd := exec.Command(step[0], step[1:]...)
		cmd.Dir = repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %w", step, err)
		}
		fmt.Fprintf(os.Stderr, "reliability: %s done (%.1fs)\n", step[len(step)-1], time.Since(start).Seconds())
	}
	return nil
}
