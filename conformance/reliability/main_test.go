package reliability

import (
	"testing"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// TestMain installs Skiff on the local cluster once for all scenarios,
// with the echo and toolbox images (the load generator).
func TestMain(m *testing.M) { kubetest.Main(m, "reliability", "skiff.local/echo,skiff.local/toolbox") }
