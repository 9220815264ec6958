package footprint

import (
	"testing"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// TestMain installs Skiff on the local cluster, with the echo image.
func TestMain(m *testing.M) { kubetest.Main(m, "footprint", "skiff.local/echo") }
