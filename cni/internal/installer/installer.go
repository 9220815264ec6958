package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/skiffmesh/skiff/cni/internal/plugin"
)

// Defaults for Config.
const (
	DefaultKubeconfigName = "skiff-cni.kubeconfig"
	DefaultResync         = time.Minute
	// stateName keeps what uninstall needs to restore the primary
	// configuration byte for byte. Runtimes ignore the extension.
	stateName = ".skiff-cni.state"
	// debounce groups the bursts of events one rewrite causes.
	debounce = 100 * time.Millisecond
)

// ErrNoPrimary reports that the configuration directory holds no network
// configuration yet (the primary CNI has not installed itself).
var ErrNoPrimary = errors.New("no primary CNI configuration yet")

// Config configures an Installer. Paths are as the installer sees them
// (host directories mounted into the agent's pod).
type Config struct {
	// ConfDir is the host's CNI configuration directory.
	ConfDir string
	// HostConfDir is ConfDir as the host sees it, for the outcomes given
	// to Changed (a node's administrator looks for the file there); ""
	// means ConfDir.
	HostConfDir string
	// BinDir is the host's CNI binary directory.
	BinDir string
	// PluginBinary is the skiff-cni binary to copy into BinDir.
	PluginBinary string
	// KubeconfigName is the plugin kubeconfig's file name in ConfDir.
	KubeconfigName string
	// Entry is the plugin entry to chain. Its paths are host paths.
	Entry Entry
	// Credentials, when set, are written as the plugin's kubeconfig and
	// rewritten when the token rotates.
	Credentials *Credentials
	// Resync re-checks everything periodically, in case an event was lost.
	Resync time.Duration
	// Changed, when set, is called by Run after an installation pass whose
	// outcome differs from the previous one: err is nil once skiff-cni is
	// chained, or why it is not (a *ConfigError for a configuration left
	// untouched). Waiting for the primary CNI (ErrNoPrimary) is not
	// reported. It must not block.
	Changed func(err error)
	Log     *slog.Logger
}

// Installer keeps skiff-cni chained into the primary CNI configuration.
type Installer struct {
	cfg       Config
	log       *slog.Logger
	installed atomic.Bool
	// reported is the outcome last given to cfg.Changed ("" for
	// chained); only Run's goroutine uses it.
	reported *string
	// plugin copies the plugin binary (nil without one); Install's.
	plugin *pluginCopy
}

// New returns an Installer for cfg, with defaults filled in.
func New(cfg Config) *Installer {
	if cfg.KubeconfigName == "" {
		cfg.KubeconfigName = DefaultKubeconfigName
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	in := &Installer{cfg: cfg, log: cfg.Log}
	if cfg.PluginBinary != "" {
		in.plugin = &pluginCopy{src: cfg.PluginBinary, dst: filepath.Join(cfg.BinDir, plugin.TypeName), perm: 0o755}
	}
	return in
}

// Installed reports whether the last installation pass left skiff-cni
// chained into the primary configuration.
func (in *Installer) Installed() bool { return in.installed.Load() }

// state is the record kept in stateName.
type state struct {
	// Primary is the configuration file as the primary CNI wrote it, and
	// Original its exact content and mode.
	Primary  string      `json:"primary"`
	Original []byte      `json:"original"`
	Mode     fs.FileMode `json:"mode"`
	// Written is the file Skiff wrote (Primary, or its .conflist form) and
	// WrittenSHA256 the hash of what it wrote.
	Written       string `json:"written"`
	WrittenSHA256 string `json:"writtenSHA256"`
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func (in *Installer) statePath() string { return filepath.Join(in.cfg.ConfDir, stateName) }

func (in *Installer) loadState() *state {
	data, err := os.ReadFile(in.statePath())
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			in.log.Warn("reading installer state", "err", err)
		}
		return nil
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil || st.Primary == "" || st.Written == "" ||
		filepath.Base(st.Primary) != st.Primary || filepath.Base(st.Written) != st.Written {
		in.log.Warn("ignoring unreadable installer state", "file", in.statePath(), "err", err)
		return nil
	}
	return &st
}

func (in *Installer) saveState(st *state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeAtomic(in.statePath(), data, 0o600)
}

// Primary returns the path of the configuration the runtime uses: the first
// configuration file in lexical order.
func (in *Installer) Primary() (string, error) {
	entries, err := os.ReadDir(in.cfg.ConfDir) // sorted by name
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", in.cfg.ConfDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() && IsConfFile(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", ErrNoPrimary
	}
	return filepath.Join(in.cfg.ConfDir, names[0]), nil
}

// Install copies the plugin, writes its kubeconfig and chains its entry
// into the primary configuration. Each part is attempted; the errors are
// joined. A *ConfigError explains a configuration left untouched.
func (in *Installer) Install() error {
	var errs []error
	if in.plugin != nil {
		if wrote, err := in.plugin.sync(); err != nil {
			errs = append(errs, err)
		} else if wrote {
			in.log.Info("installed CNI plugin binary", "path", in.plugin.dst)
		}
	}
	if in.cfg.Credentials != nil {
		if err := in.writeKubeconfig(); err != nil {
			errs = append(errs, err)
		}
	}
	err := in.installConfig()
	in.installed.Store(err == nil)
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (in *Installer) kubeconfigPath() string {
	return filepath.Join(in.cfg.ConfDir, in.cfg.KubeconfigName)
}

func (in *Installer) writeKubeconfig() error {
	want, err := in.cfg.Credentials.kubeconfig()
	if err != nil {
		return fmt.Errorf("plugin kubeconfig: %w", err)
	}
	path := in.kubeconfigPath()
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := writeAtomic(path, want, 0o600); err != nil {
		return err
	}
	in.log.Info("wrote the plugin's kubeconfig", "path", path)
	return nil
}

func (in *Installer) installConfig() error {
	primary, err := in.Primary()
	if err != nil {
		return err
	}
	data, mode, err := readLimited(primary)
	if err != nil {
		return err
	}
	st := in.loadState()
	base := filepath.Base(primary)

	if HasEntry(primary, data) {
		// Already chained (by us, earlier): keep the entry current.
		out, changed, err := AddEntry(primary, data, in.cfg.Entry)
		if err != nil {
			return err
		}
		if changed {
			if err := writeAtomic(primary, out, mode); err != nil {
				return err
			}
			in.log.Info("updated skiff-cni entry", "file", primary)
		} else {
			out = data
		}
		if st != nil && st.Written == base && st.WrittenSHA256 == sum(data) {
			if !changed {
				return nil
			}
			st.WrittenSHA256 = sum(out)
			return in.saveState(st)
		}
		// Someone else rewrote the file and kept our entry, or the state
		// was lost: the primary's version is this one, without our entry.
		orig, _, err := RemoveEntry(primary, data)
		if err != nil {
			return err
		}
		return in.saveState(&state{Primary: base, Original: orig, Mode: mode, Written: base, WrittenSHA256: sum(out)})
	}

	// The primary CNI's own content: chain our entry into it.
	out, _, err := AddEntry(primary, data, in.cfg.Entry)
	if err != nil {
		return err
	}
	target := ListName(primary)
	if target != primary {
		if _, err := os.Stat(target); err == nil && (st == nil || st.Written != filepath.Base(target)) {
			return &ConfigError{File: primary, Reason: "converting it to a list would overwrite " + filepath.Base(target)}
		}
	}
	if st != nil && st.Written != filepath.Base(target) {
		// Another file has become the primary: give the previous one back
		// its original content before chaining into the new one.
		if err := in.restore(st); err != nil {
			return fmt.Errorf("restoring the previous primary %s: %w", st.Primary, err)
		}
	}
	st = &state{Primary: base, Original: data, Mode: mode, Written: filepath.Base(target), WrittenSHA256: sum(out)}
	// Record the original before touching anything, so it is never lost.
	if err := in.saveState(st); err != nil {
		return err
	}
	if err := writeAtomic(target, out, mode); err != nil {
		return err
	}
	if target != primary {
		if err := os.Remove(primary); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s after converting it to %s: %w", primary, target, err)
		}
	}
	// Validate what is on disk now.
	got, _, err := readLimited(target)
	if err != nil {
		return err
	}
	if !HasEntry(target, got) {
		return fmt.Errorf("%s does not hold the skiff-cni entry after writing it", target)
	}
	in.log.Info("chained skiff-cni into the primary CNI configuration", "file", target, "from", primary)
	return nil
}

// Uninstall removes Skiff's entry, restoring the primary configuration
// byte for byte when nobody changed it since, and removes the plugin
// binary and kubeconfig.
func (in *Installer) Uninstall() error {
	in.installed.Store(false)
	var errs []error
	if st := in.loadState(); st != nil {
		if err := in.restore(st); err != nil {
			errs = append(errs, err)
		}
	}
	// Whatever the state said, no file may keep our entry.
	if err := in.removeEntries(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, removeFile(in.statePath()), removeFile(in.kubeconfigPath()))
	if in.cfg.BinDir != "" {
		errs = append(errs, removeFile(filepath.Join(in.cfg.BinDir, plugin.TypeName)))
	}
	return errors.Join(errs...)
}

// restore puts back the primary configuration recorded in st, byte for
// byte, if the file Skiff wrote is still as Skiff wrote it.
func (in *Installer) restore(st *state) error {
	written := filepath.Join(in.cfg.ConfDir, st.Written)
	primary := filepath.Join(in.cfg.ConfDir, st.Primary)
	data, _, err := readLimited(written)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case sum(data) != st.WrittenSHA256:
		return nil // changed since; removeEntries edits it instead
	}
	if st.Written != st.Primary {
		if _, err := os.Stat(primary); err == nil {
			// The primary CNI has written its file again since.
			return removeFile(written)
		}
	}
	if err := writeAtomic(primary, st.Original, st.Mode); err != nil {
		return err
	}
	if st.Written != st.Primary {
		if err := removeFile(written); err != nil {
			return err
		}
	}
	in.log.Info("restored CNI configuration", "file", primary)
	return nil
}

func (in *Installer) removeEntries() error {
	entries, err := os.ReadDir(in.cfg.ConfDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !IsConfFile(e.Name()) {
			continue
		}
		path := filepath.Join(in.cfg.ConfDir, e.Name())
		data, mode, err := readLimited(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, found, err := RemoveEntry(path, data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || HasEntry(path, data) {
				errs = append(errs, err)
			}
			continue
		}
		if found {
			if err := writeAtomic(path, out, mode); err != nil {
				errs = append(errs, err)
				continue
			}
			in.log.Info("removed skiff-cni entry", "file", path)
		}
	}
	return errors.Join(errs...)
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Run installs, then watches the configuration and binary directories
// (and the token's) and installs again whenever something relevant
// changes, until ctx ends. Failures are logged and retried on the next
// change or resync; Run returns only when ctx ends or watching fails.
func (in *Installer) Run(ctx context.Context) error {
	for _, d := range []string{in.cfg.ConfDir, in.cfg.BinDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching CNI directories: %w", err)
	}
	defer w.Close()
	watched := []string{in.cfg.ConfDir}
	if in.cfg.BinDir != "" && in.cfg.PluginBinary != "" {
		watched = append(watched, in.cfg.BinDir)
	}
	if in.cfg.Credentials != nil {
		watched = append(watched, filepath.Dir(in.cfg.Credentials.TokenFile))
	}
	for _, d := range watched {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watching %s: %w", d, err)
		}
	}
	in.installAndLog()

	resync := time.NewTicker(in.cfg.Resync)
	defer resync.Stop()
	var pending <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("CNI directory watch closed")
			}
			if in.relevant(ev) {
				if in.plugin != nil && filepath.Clean(ev.Name) == in.plugin.dst {
					in.plugin.forget()
				}
				pending = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("CNI directory watch closed")
			}
			in.log.Warn("watching CNI directories", "err", err)
			pending = time.After(debounce)
		case <-pending:
			pending = nil
			in.installAndLog()
		case <-resync.C:
			in.installAndLog()
		}
	}
}

func (in *Installer) installAndLog() {
	err := in.Install()
	var ce *ConfigError
	switch {
	case err == nil:
	case errors.Is(err, ErrNoPrimary):
		in.log.Info("waiting for the primary CNI to write its configuration", "dir", in.cfg.ConfDir)
		return
	case errors.As(err, &ce):
		in.log.Error("not chaining skiff-cni", "file", ce.File, "reason", ce.Reason)
	default:
		in.log.Error("installing skiff-cni", "err", err)
	}
	in.report(err)
}

// report gives err to cfg.Changed if it differs from the outcome reported
// last.
func (in *Installer) report(err error) {
	if in.cfg.Changed == nil {
		return
	}
	outcome := ""
	if err != nil {
		outcome = err.Error()
	}
	if in.reported != nil && *in.reported == outcome {
		return
	}
	in.reported = &outcome
	if err != nil && in.cfg.HostConfDir != "" && in.cfg.HostConfDir != in.cfg.ConfDir {
		err = errors.New(strings.ReplaceAll(outcome, in.cfg.ConfDir, in.cfg.HostConfDir))
	}
	in.cfg.Changed(err)
}

// relevant reports whether a file event may need the installation redone.
func (in *Installer) relevant(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	if strings.HasSuffix(name, tmpSuffix) {
		return false
	}
	switch filepath.Dir(ev.Name) {
	case filepath.Clean(in.cfg.ConfDir):
		return IsConfFile(name) || name == in.cfg.KubeconfigName
	case filepath.Clean(in.cfg.BinDir):
		return name == plugin.TypeName
	}
	return true // the token's directory
}
