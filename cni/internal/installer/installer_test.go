package installer

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffmesh/skiff/cni/internal/plugin"
)

const bridgeConf = `{
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}
}
`

const bridgeList = `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]]}},
  {"type":"portmap","capabilities":{"portMappings":true}}
]}
`

var entry = Entry{AgentSocket: "/var/run/skiff-cni/agent.sock", Kubeconfig: "/etc/cni/net.d/skiff-cni.kubeconfig", ExcludeNamespaces: []string{"kube-system"}}

type fixture struct {
	conf, bin, secrets string
	in                 *Installer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{
		conf:    filepath.Join(root, "net.d"),
		bin:     filepath.Join(root, "bin"),
		secrets: filepath.Join(root, "sa"),
	}
	for _, d := range []string{f.conf, f.bin, f.secrets} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(root, "skiff-cni-src")
	write(t, src, "#!plugin binary v1", 0o755)
	write(t, filepath.Join(f.secrets, "token"), "token-1\n", 0o600)
	write(t, filepath.Join(f.secrets, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", 0o644)
	f.in = New(Config{
		ConfDir:      f.conf,
		BinDir:       f.bin,
		PluginBinary: src,
		Entry:        entry,
		Credentials: &Credentials{
			Server:    "https://10.96.0.1:443",
			TokenFile: filepath.Join(f.secrets, "token"),
			CAFile:    filepath.Join(f.secrets, "ca.crt"),
		},
		Log: slog.New(slog.DiscardHandler),
	})
	return f
}

func write(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// snapshot returns every file in dir with its content and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Mode().String() + " " + read(t, filepath.Join(dir, e.Name()))
	}
	return out
}

// checkChained asserts path is a list a runtime loads, ending with
// skiff-cni after wantPlugins, and has mode.
func checkChained(t *testing.T, path string, wantPlugins []string, mode fs.FileMode) {
	t.Helper()
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("runtime cannot load %s: %v", path, err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	want := append(append([]string{}, wantPlugins...), plugin.TypeName)
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("%s plugins %v, want %v", path, types, want)
	}
	last := list.Plugins[len(list.Plugins)-1]
	c, err := plugin.ParseConfig(append(bytes.TrimSuffix(last.Bytes, []byte("}")), []byte(`,"cniVersion":"1.0.0","name":"x"}`)...))
	if err != nil {
		t.Fatalf("plugin cannot parse its entry %s: %v", last.Bytes, err)
	}
	if c.AgentSocket != entry.AgentSocket || c.Kubeconfig != entry.Kubeconfig {
		t.Fatalf("entry %s lost fields", last.Bytes)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Fatalf("%s mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
}

func TestConfToConflistAndUninstall(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.conf, "10-bridge.conf"), bridgeConf, 0o640)
	write(t, filepath.Join(f.conf, "20-other.conflist"), bridgeList, 0o644)
	before := snapshot(t, f.conf)

	if err := f.in.Install(); err != nil {
		t.Fatal(err)
	}
	if !f.in.Installed() {
		t.Fatal("Installed() false after a successful install")
	}
	if exists(filepath.Join(f.conf, "10-bridge.conf")) {
		t.Fatal("the .conf is still there next to its .conflist (the runtime would keep reading it)")
	}
	checkChained(t, filepath.Join(f.conf, "10-bridge.conflist"), []string{"bridge"}, 0o640)
	if got := read(t, filepath.Join(f.conf, "20-other.conflist")); got != bridgeList {
		t.Fatal("a configuration after the primary was modified")
	}
	if got := read(t, filepath.Join(f.bin, "skiff-cni")); got != "#!plugin binary v1" {
		t.Fatalf("plugin binary %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(f.bin, "skiff-cni")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("plugin binary mode %v", fi.Mode())
	}
	kc := filepath.Join(f.conf, DefaultKubeconfigName)
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("plugin cannot load its kubeconfig: %v", err)
	}
	if cfg.BearerToken != "token-1" || cfg.Host != "https://10.96.0.1:443" || len(cfg.CAData) == 0 {
		t.Fatalf("kubeconfig: host %s token %q ca %d bytes", cfg.Host, cfg.BearerToken, len(cfg.CAData))
	}
	if fi, _ := os.Stat(kc); fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig mode %v, want 0600", fi.Mode())
	}

	// A second install changes nothing.
	mid := snapshot(t, f.conf)
	if err := f.in.Install(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, f.conf); !equalMaps(mid, after) {
		t.Fatal("a second install changed files")
	}

	if err := f.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, f.conf); !equalMaps(before, after) {
		t.Fatalf("uninstall did not restore the directory byte for byte:\nbefore %v\nafter  %v", before, after)
	}
	if exists(filepath.Join(f.bin, "skiff-cni")) {
		t.Fatal("plugin binary left behind")
	}
}

func TestConflistAndUninstall(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.conf, "10-net.conflist"), bridgeList, 0o600)
	before := snapshot(t, f.conf)
	if err := f.in.Install(); err != nil {
		t.Fatal(err)
	}
	checkChained(t, filepath.Join(f.conf, "10-net.conflist"), []string{"bridge", "portmap"}, 0o600)
	if err := f.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, f.conf); !equalMaps(before, after) {
		t.Fatalf("uninstall did not restore byte for byte:\nbefore %v\nafter  %v", before, after)
	}
}

func TestPrimaryIsFirstInLexicalOrder(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.conf, "10-b.conflist"), bridgeList, 0o644)
	write(t, filepath.Join(f.conf, "05-a.conf"), bridgeConf, 0o644)
	write(t, filepath.Join(f.conf, "00-notes.txt"), "not a config", 0o644)
	if err := f.in.Install(); err != nil {
		t.Fatal(err)
	}
	checkChained(t, filepath.Join(f.conf, "05-a.conflist"), []string{"bridge"}, 0o644)
	if read(t, filepath.Join(f.conf, "10-b.conflist")) != bridgeList {
		t.Fatal("second configuration modified")
	}
}

func TestUnusableConfigLeftUntouched(t *testing.T) {
	tests := []struct {
		name, file, data, reason string
	}{
		{"corrupt JSON", "10-bad.conf", `{"cniVersion": "1.0.0", "name": "x", "type": "bridge"`, "not valid JSON"},
		{"list without plugins", "10-bad.conflist", `{"cniVersion":"1.0.0","name":"x"}`, "without a plugins list"},
		{"plugin without type", "10-bad.conflist", `{"cniVersion":"1.0.0","name":"x","plugins":[{"bridge":"cni0"}]}`, "type"},
		{"conf without name", "10-bad.conf", `{"cniVersion":"1.0.0","type":"bridge"}`, "name"},
		{"too old", "10-bad.conf", `{"cniVersion":"0.2.0","name":"x","type":"bridge"}`, "older"},
		{"not an object", "10-bad.json", `[1,2]`, "object"},
		{"two skiff entries", "10-bad.conflist", `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"type":"skiff-cni"},{"type":"skiff-cni"}]}`, "more than one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			write(t, filepath.Join(f.conf, tc.file), tc.data, 0o644)
			before := snapshot(t, f.conf)
			err := f.in.Install()
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("Install: %v; want a ConfigError saying %q", err, tc.reason)
			}
			if f.in.Installed() {
				t.Fatal("Installed() true")
			}
			after := snapshot(t, f.conf)
			delete(after, DefaultKubeconfigName)
			if !equalMaps(before, after) {
				t.Fatalf("configuration directory changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestConversionWouldOverwrite(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.conf, "10-net.conf"), bridgeConf, 0o644)
	write(t, filepath.Join(f.conf, "10-net.conflist"), bridgeList, 0o644)
	err := f.in.Install()
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "overwrite") {
		t.Fatalf("Install: %v, want a ConfigError about overwriting", err)
	}
	if read(t, filepath.Join(f.conf, "10-net.conflist")) != bridgeList || read(t, filepath.Join(f.conf, "10-net.conf")) != bridgeConf {
		t.Fatal("files changed")
	}
}

func TestNoPrimaryYet(t *testing.T) {
	f := newFixture(t)
	if err := f.in.Install(); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("Install in an empty dir: %v, want ErrNoPrimary", err)
	}
}

func TestStateLostStillUninstalls(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.conf, "10-net.conflist"), bridgeList, 0o644)
	if err := f.in.Install(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.conf, stateName), "{garbage", 0o600)
	if err := f.in.Install(); err != nil { // rebuilds the state
		t.Fatal(err)
	}
	os.Remove(filepath.Join(f.conf, stateName))
	if err := f.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	got := read(t, filepath.Join(f.conf, "10-net.conflist"))
	if HasEntry("10-net.conflist", []byte(got)) {
		t.Fatal("entry left after uninstall without state")
	}
	if _, err := libcni.ConfListFromBytes([]byte(got)); err != nil {
		t.Fatalf("uninstall left an invalid config: %v", err)
	}
}

// waitFor polls cond until it holds; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchReinsertsAndRefreshes(t *testing.T) {
	f := newFixture(t)
	list := filepath.Join(f.conf, "10-net.conflist")
	write(t, list, bridgeList, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	chained := func(path string) func() bool {
		return func() bool {
			b, err := os.ReadFile(path)
			return err == nil && HasEntry(path, b)
		}
	}
	waitFor(t, "the first installation", chained(list))

	// The primary CNI rewrites its configuration (new content, our entry
	// gone): the entry comes back.
	rewritten := strings.Replace(bridgeList, "10.244.0.0/24", "10.244.7.0/24", 1)
	write(t, list, rewritten, 0o644)
	waitFor(t, "re-insertion after a rewrite", chained(list))
	checkChained(t, list, []string{"bridge", "portmap"}, 0o644)
	if !strings.Contains(read(t, list), "10.244.7.0/24") {
		t.Fatal("re-insertion lost the primary's new content")
	}

	// The primary replaces its file by a single .conf that sorts first.
	write(t, filepath.Join(f.conf, "05-net.conf"), bridgeConf, 0o644)
	waitFor(t, "conversion of the new primary", chained(filepath.Join(f.conf, "05-net.conflist")))
	waitFor(t, "removal of the converted .conf", func() bool { return !exists(filepath.Join(f.conf, "05-net.conf")) })

	// The plugin binary disappears: it is copied again.
	os.Remove(filepath.Join(f.bin, "skiff-cni"))
	waitFor(t, "the plugin binary to come back", func() bool { return exists(filepath.Join(f.bin, "skiff-cni")) })

	// The token rotates (as kubelet does it, by an atomic rename): the
	// kubeconfig follows.
	tmp := filepath.Join(f.secrets, ".token.new")
	write(t, tmp, "token-2", 0o600)
	if err := os.Rename(tmp, filepath.Join(f.secrets, "token")); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(f.conf, DefaultKubeconfigName)
	waitFor(t, "the kubeconfig to carry the new token", func() bool {
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		return err == nil && cfg.BearerToken == "token-2"
	})

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if err := f.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	// Both files are back as the primary CNI last wrote them, byte for byte.
	if got := read(t, filepath.Join(f.conf, "05-net.conf")); got != bridgeConf {
		t.Fatalf("uninstall restored %q", got)
	}
	if exists(filepath.Join(f.conf, "05-net.conflist")) {
		t.Fatal("converted list left behind")
	}
	if got := read(t, list); got != rewritten {
		t.Fatalf("the former primary is not as the primary CNI rewrote it: %q", got)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A primary configuration corrupted while installed is left as it is, the
// change is reported once, and fixing the file chains skiff-cni again
// without a restart.
func TestCorruptPrimaryReportedAndRecovered(t *testing.T) {
	f := newFixture(t)
	outcomes := make(chan error, 16)
	f.in.cfg.Changed = func(err error) { outcomes <- err }
	list := filepath.Join(f.conf, "10-net.conflist")
	write(t, list, bridgeList, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.in.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stop()
		}
	}()
	next := func(what string) error {
		t.Helper()
		select {
		case err := <-outcomes:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out waiting for %s to be reported", what)
			return nil
		}
	}
	if err := next("the first installation"); err != nil {
		t.Fatalf("first installation reported %v", err)
	}

	corrupt := `{"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bri`
	write(t, list, corrupt, 0o644)
	err := next("the corrupt configuration")
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != list {
		t.Fatalf("reported %v; want a ConfigError about %s", err, list)
	}
	if f.in.Installed() {
		t.Error("Installed() with a corrupt primary configuration")
	}
	if got := read(t, list); got != corrupt {
		t.Fatalf("the corrupt file was changed to %q", got)
	}

	write(t, list, bridgeList, 0o644)
	if err := next("the fixed configuration"); err != nil {
		t.Fatalf("after the fix, reported %v", err)
	}
	checkChained(t, list, []string{"bridge", "portmap"}, 0o644)
	if !f.in.Installed() {
		t.Error("not Installed() after the fix")
	}
	// Nothing changed since: another pass reports nothing.
	stop()
	f.in.installAndLog()
	select {
	case err := <-outcomes:
		t.Fatalf("an unchanged outcome was reported again: %v", err)
	default:
	}
}

// Changed names files as the host sees them, not as the agent mounts them.
func TestChangedNamesHostPaths(t *testing.T) {
	var got error
	in := New(Config{ConfDir: "/host/etc/cni/net.d", HostConfDir: "/etc/cni/net.d", Changed: func(err error) { got = err }})
	in.report(&ConfigError{File: "/host/etc/cni/net.d/10-net.conflist", Reason: "not valid JSON"})
	if got == nil || !strings.Contains(got.Error(), " /etc/cni/net.d/10-net.conflist ") || strings.Contains(got.Error(), "/host") {
		t.Errorf("Changed got %v; want the file under /etc/cni/net.d", got)
	}
}
