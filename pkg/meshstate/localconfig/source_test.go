package localconfig

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
)

func TestSourceReloadsAndKeepsLastGoodState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		t.Helper()
		// Replace atomically, as editors and ConfigMaps do.
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("workloads: [{name: a, namespace: ns, addresses: [10.0.0.1]}]")
	st := meshstate.NewStore("istio-system", "cluster.local")
	src := NewSource(path, st, nil)
	loads := make(chan error, 16)
	src.OnLoad = func(err error) { loads <- err }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	next := func() error {
		t.Helper()
		select {
		case err := <-loads:
			return err
		case err := <-done:
			t.Fatalf("Run ended: %v", err)
		}
		return nil
	}
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if st.Snapshot().Workload("ns/a") == nil {
		t.Fatal("first load missing workload")
	}

	good := st.Snapshot()
	write("workloads: [{name: a, namespace: ns, addresses: [not-an-ip]}]")
	var err error
	for err == nil { // a rename can produce several events
		err = next()
	}
	if st.Snapshot() != good {
		t.Fatal("bad file replaced the state")
	}
	if src.LastError() == nil {
		t.Fatal("LastError is nil after a bad file")
	}

	write("workloads: [{name: b, namespace: ns, addresses: [10.0.0.2]}]")
	for {
		if err := next(); err == nil && st.Snapshot().Workload("ns/b") != nil {
			break
		}
	}
	if st.Snapshot().Workload("ns/a") != nil {
		t.Fatal("old workload still present after reload")
	}
}

func TestSourceFailsOnBadFirstFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("workloads: {"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := meshstate.NewStore("istio-system", "cluster.local")
	if err := NewSource(path, st, nil).Run(t.Context()); err == nil {
		t.Fatal("Run accepted a bad first file")
	}
	select {
	case <-st.Loaded():
		t.Fatal("store marked loaded")
	default:
	}
}
