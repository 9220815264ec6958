package localconfig

import (
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("workloads: [{name: a, namespace: b, addresses: [::1]}]"))
	f.Add([]byte("policies: [{name: a, namespace: b, groups: [{rules: [{matches: [{notSourceIps: [1.2.3.4/8]}]}]}]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must be accepted or rejected cleanly by the store.
		st := meshstate.NewStore("istio-system", "cluster.local")
		_ = st.Replace(c)
	})
}
