package app

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The key is made once and kept: a restarted ztunnel reads the same one;
// a damaged file is replaced by a whole new key.
func TestQUICResetKey(t *testing.T) {
	dir := t.TempDir()
	first, err := quicResetKey(dir)
	if err != nil || len(first) != 32 {
		t.Fatalf("first key: %d bytes, %v", len(first), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, resetKeyName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := quicResetKey(dir)
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("after a restart: %x, %v; want the same key", again, err)
	}
	if err := os.WriteFile(filepath.Join(dir, resetKeyName), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	replaced, err := quicResetKey(dir)
	if err != nil || len(replaced) != 32 || bytes.Equal(replaced, first) {
		t.Fatalf("damaged file: got %x, %v; want a new 32-byte key", replaced, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the directory: %v", entries)
	}
}
