package app

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// resetKeyName is the file, beside the node agent's socket on the node,
// that keeps ztunnel's QUIC stateless-reset key across restarts.
const resetKeyName = "quic-reset.key"

// quicResetKey returns the node's QUIC stateless-reset key from dir,
// making it the first time. A ztunnel that replaces a crashed one must
// use its predecessor's key, or peers' QUIC connections to the node's pods
// hang until their idle timeout instead of being reset at once.
func quicResetKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, resetKeyName)
	key, err := os.ReadFile(path)
	if err == nil && len(key) == 32 {
		return key, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	// Missing or damaged: a new one, written whole or not at all.
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, "."+resetKeyName+".*")
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	_, werr := tmp.Write(key)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return key, nil
}
