package installer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// tmpSuffix marks files being written; runtimes ignore the extension.
const tmpSuffix = ".skiff-tmp"

// writeAtomic replaces path with data, mode perm, so that readers see the
// old or the new content and never a part.
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+hex.EncodeToString(b)+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	// The umask may have narrowed perm at creation.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// copyIfChanged copies src to dst (mode perm) unless dst already has the
// same content; it reports whether it wrote.
func copyIfChanged(src, dst string, perm fs.FileMode) (bool, error) {
	want, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == perm {
			return false, nil
		}
	}
	return true, writeAtomic(dst, want, perm)
}

// readLimited reads a configuration file, refusing absurd sizes.
func readLimited(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	const max = 1 << 20
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, 0, err
	}
	if len(data) > max {
		return nil, 0, &ConfigError{File: path, Reason: "larger than 1 MiB"}
	}
	return data, fi.Mode().Perm(), nil
}
