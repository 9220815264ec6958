package reliability

import "testing"

// The scenarios, in the order of issue 14's priorities; each is its own
// test so that -run picks one, e.g. -run TestZtunnelCrash.

// ztunnel killed with SIGKILL on one node: enrolled pods there fail closed
// while it is gone, and their traffic returns without a pod restart.
func TestZtunnelCrash(t *testing.T) { ztunnelCrash(t) }

// ztunnel DaemonSet rolled under new connections from both nodes and
// long-lived connections: no new connection fails, no old one hangs.
func TestZtunnelRollingUpgrade(t *testing.T) { ztunnelRoll(t) }

// A 2-replica waypoint rolled under steady HTTP load: no request fails.
func TestWaypointRollingUpgrade(t *testing.T) { waypointRoll(t) }

// istiod-lite away for two minutes under load: no request fails, a pod
// created meanwhile and a policy changed meanwhile take effect when it
// returns, and the root and workload certificates survive.
func TestControlPlaneOutage(t *testing.T) { controlPlaneOutage(t) }

// Workload certificates of two minutes, traffic through three rotations:
// no request fails, and istiod-lite's and ztunnel's figures show each.
func TestCertificateRotation(t *testing.T) { certificateRotation(t) }

// The CNI node agent restarted: no pod leaves the mesh, and a pod created
// while it was away is enrolled once it is back.
func TestCNIAgentRestart(t *testing.T) { cniAgentRestart(t) }

// Pods deleted and recreated under load: policy holds for each new pod
// from its first connection, and no request fails on a deleted pod.
func TestPodChurn(t *testing.T) { podChurn(t) }

// The apiserver stopped for a minute: the data path carries on with the
// last configuration, and everything resynchronises when it returns.
func TestAPIServerUnavailable(t *testing.T) { apiserverUnavailable(t) }

// A corrupt primary CNI configuration on a node: left untouched, new pods
// there fail closed, an Event on the node says why, and fixing the file
// recovers without a restart.
func TestBadPrimaryCNIConfig(t *testing.T) { badPrimaryCNIConfig(t) }
