package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// certTTL is the workload certificate lifetime of the rotation scenario.
// Certificates are backdated a minute and renewed at half their life, so
// one of two minutes is replaced every 30 s.
const certTTL = "2m"

// certificateRotation gives workload certificates a lifetime of two
// minutes (istiod chart values pilot.certTTL and pilot.maxCertTTL, the
// latter capping what ztunnel asks for) and sends requests from both nodes
// through at least three rotations. No request may fail; istiod-lite's
// citadel_server_success_cert_issuance_count and the serial numbers in
// each ztunnel's /config_dump show every rotation.
func certificateRotation(t *testing.T) {
	e := newEnv(t, "rotation")
	e.withHelmValues("istiod", "istiod", map[string]string{"pilot.certTTL": `"` + certTTL + `"`, "pilot.maxCertTTL": `"` + certTTL + `"`})
	// The namespace's pods, and so their certificates, come after the change.
	url := "http://" + e.echo(e.ns) + "/rotation"

	const rotations = 3
	dur := 150 * time.Second
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	e.measuring(loads...)
	issuedBefore := metric(e.istiodMetrics(), "citadel_server_success_cert_issuance_count")

	// Each (node, identity) pair's serial numbers, seen every 5 s.
	serials := map[string]map[string]bool{}
	admin := map[string]string{}
	for _, node := range e.nodes[:2] {
		admin[node] = e.ztunnelAdmin(node)
	}
	end := time.Now().Add(dur - 5*time.Second)
	for time.Now().Before(end) {
		for _, node := range e.nodes[:2] {
			for id, s := range e.serialsIn(e.dumpAt(admin[node])) {
				key := node + " " + id[strings.LastIndex(id, "/")+1:]
				if serials[key] == nil {
					serials[key] = map[string]bool{}
				}
				serials[key][s] = true
			}
		}
		time.Sleep(5 * time.Second) // sampling period, not a wait for something
	}
	issued := metric(e.istiodMetrics(), "citadel_server_success_cert_issuance_count") - issuedBefore

	rs := e.results(2*time.Minute, loads...)
	failed, total := sum(rs, loads...)
	var seen []string
	least := -1
	for key, s := range serials {
		seen = append(seen, fmt.Sprintf("%s: %d", key, len(s)))
		if least < 0 || len(s)-1 < least {
			least = len(s) - 1
		}
	}
	e.figure("requests failed %d of %d with %s certificates (%s; %s); rotations seen per node and service account (serials - 1, at least %d): %s; istiod-lite issued %.0f certificates meanwhile",
		failed, total, certTTL, rs[loads[0]].Summary(), rs[loads[1]].Summary(), least, strings.Join(seen, ", "), issued)
	if failed != 0 {
		t.Errorf("%d of %d requests failed through the rotations; %s", failed, total, e.explainFailures(rs, loads))
	}
	// echo and client on each of the two nodes.
	if len(serials) < 4 {
		t.Errorf("ztunnels held certificates for %d (node, identity) pairs of the namespace, want 4: %v", len(serials), seen)
	}
	if least < rotations {
		t.Errorf("a certificate rotated %d times, want at least %d: %v", least, rotations, seen)
	}
	if issued < float64(rotations*len(serials)) {
		t.Errorf("istiod-lite's citadel_server_success_cert_issuance_count rose by %.0f, want at least %d", issued, rotations*len(serials))
	}
}
