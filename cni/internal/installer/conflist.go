// Package installer chains the skiff-cni plugin into the node's primary CNI
// configuration, keeps it there while the primary CNI rewrites its files,
// maintains the plugin's binary and kubeconfig, and restores everything on
// uninstall.
package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/skiffmesh/skiff/cni/internal/plugin"
)

// confExtensions are the files a runtime reads as network configurations,
// in the order of containerd's loader; the first file in lexical order is
// the primary one.
var confExtensions = []string{".conf", ".conflist", ".json"}

// IsConfFile reports whether a runtime would read name as a configuration.
func IsConfFile(name string) bool {
	ext := filepath.Ext(name)
	for _, e := range confExtensions {
		if ext == e {
			return true
		}
	}
	return false
}

// Entry is Skiff's plugin entry in a configuration list. Paths are as seen
// from the host, where the runtime runs the plugin.
type Entry struct {
	AgentSocket       string   `json:"agentSocket,omitempty"`
	Kubeconfig        string   `json:"kubeconfig,omitempty"`
	ExcludeNamespaces []string `json:"excludeNamespaces"`
	Timeout           string   `json:"timeout,omitempty"`
}

// MarshalJSON adds the plugin type.
func (e Entry) MarshalJSON() ([]byte, error) {
	type plain Entry
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{plugin.TypeName, plain(e)})
}

// ConfigError reports a configuration file Skiff will not modify.
type ConfigError struct {
	File   string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("CNI configuration %s left untouched: %s", e.File, e.Reason)
}

// minVersion is the oldest cniVersion the plugin speaks.
const minVersion = "0.3.0"

// validate checks data is a configuration a runtime would load, of the
// list or single form, and returns its parsed list form.
func validate(file string, data []byte, isList bool) (*libcni.NetworkConfigList, error) {
	bad := func(format string, args ...any) error {
		return &ConfigError{File: file, Reason: fmt.Sprintf(format, args...)}
	}
	if !json.Valid(data) {
		return nil, bad("not valid JSON")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, bad("not a JSON object")
	}
	var list *libcni.NetworkConfigList
	if isList {
		if _, ok := top["plugins"]; !ok {
			return nil, bad("a .conflist without a plugins list")
		}
		l, err := libcni.NetworkConfFromBytes(data)
		if err != nil {
			return nil, bad("%v", err)
		}
		if len(l.Plugins) == 0 {
			return nil, bad("empty plugins list")
		}
		list = l
	} else {
		if _, ok := top["plugins"]; ok {
			return nil, bad("a single-plugin configuration (%s) holding a plugins list", filepath.Ext(file))
		}
		c, err := libcni.NetworkPluginConfFromBytes(data)
		if err != nil {
			return nil, bad("%v", err)
		}
		if c.Network.Name == "" {
			return nil, bad("no network name")
		}
		// Load it as the one-plugin list a runtime turns it into.
		wrapped, err := json.Marshal(map[string]any{
			"cniVersion": c.Network.CNIVersion, "name": c.Network.Name, "plugins": []json.RawMessage{data},
		})
		if err != nil {
			return nil, bad("%v", err)
		}
		l, err := libcni.NetworkConfFromBytes(wrapped)
		if err != nil {
			return nil, bad("%v", err)
		}
		list = l
	}
	if list.CNIVersion == "" {
		return nil, bad("no cniVersion")
	}
	if older, err := version.GreaterThan(minVersion, list.CNIVersion); err != nil {
		return nil, bad("cniVersion %q: %v", list.CNIVersion, err)
	} else if older {
		return nil, bad("cniVersion %s is older than %s, the oldest skiff-cni speaks", list.CNIVersion, minVersion)
	}
	return list, nil
}

func isList(file string) bool { return filepath.Ext(file) == ".conflist" }

// ListName returns the name the configuration has once Skiff's entry is in
// it: a single-plugin file becomes a .conflist of the same base name.
func ListName(file string) string {
	if isList(file) {
		return file
	}
	return strings.TrimSuffix(file, filepath.Ext(file)) + ".conflist"
}

// hasOurType reports whether the raw plugin object is a skiff-cni entry.
func hasOurType(raw json.RawMessage) bool {
	var p struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &p) == nil && p.Type == plugin.TypeName
}

// AddEntry returns data (the content of file) with entry appended to its
// plugins, converted to the list form if it was a single plugin. It
// replaces an outdated Skiff entry in place and reports changed=false when
// the entry is already there as wanted. data is validated first; a
// *ConfigError explains a configuration left alone.
func AddEntry(file string, data []byte, entry Entry) (out []byte, changed bool, err error) {
	if _, err := validate(file, data, isList(file)); err != nil {
		return nil, false, err
	}
	want, err := json.Marshal(entry)
	if err != nil {
		return nil, false, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, false, &ConfigError{File: file, Reason: err.Error()}
	}
	var plugins []json.RawMessage
	if isList(file) {
		if err := json.Unmarshal(top["plugins"], &plugins); err != nil {
			return nil, false, &ConfigError{File: file, Reason: "plugins: " + err.Error()}
		}
	} else {
		// The single plugin becomes the first of a list carrying its name
		// and version, as runtimes convert it.
		plugins = []json.RawMessage{bytes.TrimSpace(data)}
		top = map[string]json.RawMessage{"cniVersion": top["cniVersion"], "name": top["name"]}
	}
	found := -1
	for i, p := range plugins {
		if hasOurType(p) {
			if found >= 0 {
				return nil, false, &ConfigError{File: file, Reason: "more than one " + plugin.TypeName + " entry"}
			}
			found = i
		}
	}
	switch {
	case found >= 0 && jsonEqual(plugins[found], want) && isList(file):
		return data, false, nil
	case found >= 0:
		plugins[found] = want
	default:
		plugins = append(plugins, want)
	}
	if top["plugins"], err = json.Marshal(plugins); err != nil {
		return nil, false, err
	}
	out, err = json.MarshalIndent(top, "", "  ")
	if err != nil {
		return nil, false, err
	}
	out = append(out, '\n')
	if err := checkAdded(ListName(file), out, data, isList(file)); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// checkAdded validates the result of AddEntry: a loadable list ending in
// Skiff's entry, with the original's plugins before it.
func checkAdded(file string, out, orig []byte, origIsList bool) error {
	list, err := validate(file, out, true)
	if err != nil {
		return fmt.Errorf("configuration built for %s does not validate: %w", file, err)
	}
	before, _ := validate(file, orig, origIsList)
	n := len(list.Plugins)
	if n == 0 || list.Plugins[n-1].Network.Type != plugin.TypeName {
		return fmt.Errorf("configuration built for %s does not end with %s", file, plugin.TypeName)
	}
	want := len(before.Plugins)
	if hasEntry(before) {
		want--
	}
	if n-1 != want {
		return fmt.Errorf("configuration built for %s has %d plugins before %s, want %d", file, n-1, plugin.TypeName, want)
	}
	return nil
}

func hasEntry(l *libcni.NetworkConfigList) bool {
	for _, p := range l.Plugins {
		if p.Network.Type == plugin.TypeName {
			return true
		}
	}
	return false
}

// HasEntry reports whether data, a configuration list, holds Skiff's entry.
func HasEntry(file string, data []byte) bool {
	l, err := validate(file, data, isList(file))
	return err == nil && hasEntry(l)
}

// RemoveEntry returns data without Skiff's entry, and whether there was one.
func RemoveEntry(file string, data []byte) ([]byte, bool, error) {
	if !isList(file) {
		return data, false, nil
	}
	if _, err := validate(file, data, true); err != nil {
		return nil, false, err
	}
	var top map[string]json.RawMessage
	var plugins []json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, false, err
	}
	if err := json.Unmarshal(top["plugins"], &plugins); err != nil {
		return nil, false, err
	}
	kept := plugins[:0]
	for _, p := range plugins {
		if !hasOurType(p) {
			kept = append(kept, p)
		}
	}
	if len(kept) == len(plugins) {
		return data, false, nil
	}
	if len(kept) == 0 {
		return nil, false, &ConfigError{File: file, Reason: "it holds only Skiff's entry"}
	}
	var err error
	if top["plugins"], err = json.Marshal(kept); err != nil {
		return nil, false, err
	}
	out, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return nil, false, err
	}
	out = append(out, '\n')
	if _, err := validate(file, out, true); err != nil {
		return nil, false, errors.Join(errors.New("configuration without Skiff's entry does not validate"), err)
	}
	return out, true, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
