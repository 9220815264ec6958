package installer

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// randomBytes returns n random bytes: more than one compare chunk for
// the sizes the tests use.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCopyIfChanged(t *testing.T) {
	bin := randomBytes(t, 200<<10)
	lastByteDiffers := bytes.Clone(bin)
	lastByteDiffers[len(lastByteDiffers)-1] ^= 0xff
	for _, tc := range []struct {
		name  string
		dst   []byte // nil: no file
		perm  os.FileMode
		wrote bool
	}{
		{"no copy yet", nil, 0, true},
		{"same content and mode", bin, 0o755, false},
		{"same content, other mode", bin, 0o644, true},
		{"same size, last byte differs", lastByteDiffers, 0o755, true},
		{"shorter", bin[:len(bin)-1], 0o755, true},
		{"longer", append(bytes.Clone(bin), 0), 0o755, true},
		{"empty", []byte{}, 0o755, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			write(t, src, string(bin), 0o755)
			if tc.dst != nil {
				write(t, dst, string(tc.dst), tc.perm)
				if err := os.Chmod(dst, tc.perm); err != nil {
					t.Fatal(err)
				}
			}
			wrote, err := copyIfChanged(src, dst, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if wrote != tc.wrote {
				t.Errorf("wrote %v, want %v", wrote, tc.wrote)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, bin) {
				t.Fatalf("dst holds %d bytes (%v), want the %d of src", len(got), err, len(bin))
			}
			if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o755 {
				t.Errorf("dst mode %v, want 0755", fi.Mode().Perm())
			}
		})
	}
}

// A plugin binary replaced while it is being copied: by a rename (as an
// upgrade writes it), the copy is the whole file that was opened, never a
// mix, and the next pass copies the new one; truncated in place, the copy
// fails and dst keeps what it had.
func TestCopyIfChangedSourceReplacedWhileRead(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	oldBin, newBin := randomBytes(t, 300<<10), randomBytes(t, 250<<10)

	t.Run("renamed over", func(t *testing.T) {
		write(t, src, string(oldBin), 0o755)
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		write(t, src+".new", string(newBin), 0o755)
		if err := os.Rename(src+".new", src); err != nil {
			t.Fatal(err)
		}
		if _, err := copyFileIfChanged(f, int64(len(oldBin)), dst, 0o755); err != nil {
			t.Fatal(err)
		}
		if got := []byte(read(t, dst)); !bytes.Equal(got, oldBin) {
			t.Fatalf("dst holds %d bytes, not the %d of the file opened", len(got), len(oldBin))
		}
		if wrote, err := copyIfChanged(src, dst, 0o755); err != nil || !wrote {
			t.Fatalf("the next pass: wrote %v, %v; want the new binary written", wrote, err)
		}
		if got := []byte(read(t, dst)); !bytes.Equal(got, newBin) {
			t.Fatalf("dst holds %d bytes, not the new binary's %d", len(got), len(newBin))
		}
	})

	t.Run("truncated in place", func(t *testing.T) {
		write(t, src, string(oldBin), 0o755)
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Truncate(src, int64(len(oldBin)/3)); err != nil {
			t.Fatal(err)
		}
		_, err = copyFileIfChanged(f, int64(len(oldBin)), dst, 0o755)
		if err == nil || !strings.Contains(err.Error(), "changed while being copied") {
			t.Fatalf("copy of a file truncated meanwhile: %v; want an error saying it changed", err)
		}
		if got := []byte(read(t, dst)); !bytes.Equal(got, newBin) {
			t.Fatalf("dst changed to %d bytes; want it as it was", len(got))
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), tmpSuffix) {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	})
}

// TestPluginCopyComparesOnlyOnChange: a resync with both files as the
// last pass left them costs two stats, not a read of both; any change to
// either, or an event on dst (forget), brings the comparison back.
func TestPluginCopyComparesOnlyOnChange(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	bin, other := randomBytes(t, 200<<10), randomBytes(t, 200<<10)
	write(t, src, string(bin), 0o755)
	c := &pluginCopy{src: src, dst: dst, perm: 0o755}
	for _, step := range []struct {
		name     string
		change   func()
		compares bool
		wrote    bool
	}{
		{"first pass", func() {}, true, true},
		{"nothing changed", func() {}, false, false},
		{"nothing changed, again", func() {}, false, false},
		{"dst rewritten in place, same size", func() {
			// Within one clock tick of the last pass the change time
			// may not move; this writer sets the modification time.
			write(t, dst, string(other), 0o755)
			os.Chtimes(dst, time.Unix(1e9, 0), time.Unix(1e9, 0))
		}, true, true},
		{"dst's mode changed", func() { os.Chmod(dst, 0o700) }, true, true},
		{"an event on dst", c.forget, true, false},
		{"src replaced", func() {
			write(t, src+".new", string(other), 0o755)
			os.Rename(src+".new", src)
		}, true, true},
		{"dst removed", func() { os.Remove(dst) }, true, true},
		{"settled", func() {}, false, false},
	} {
		step.change()
		before := c.compares
		wrote, err := c.sync()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if compared := c.compares > before; compared != step.compares || wrote != step.wrote {
			t.Errorf("%s: compared %v, wrote %v; want %v, %v", step.name, compared, wrote, step.compares, step.wrote)
		}
		src, _ := os.ReadFile(src)
		if got := []byte(read(t, dst)); !bytes.Equal(got, src) {
			t.Fatalf("%s: dst holds %d bytes, not src's %d", step.name, len(got), len(src))
		}
	}
}
