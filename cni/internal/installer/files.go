package installer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	return writeAtomicFrom(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeAtomicFrom is writeAtomic with the content written by write.
func writeAtomicFrom(path string, perm fs.FileMode, write func(io.Writer) error) error {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+hex.EncodeToString(b)+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp) // no-op once renamed
	if err := write(f); err != nil {
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
	// Written back, the pages are clean and can go.
	dropCache(f)
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

// pluginCopy keeps dst a copy of src (mode perm). A pass compares their
// content only when stat says that either changed since a pass last left
// them equal, or after forget. Compared every resync, the two files (tens
// of MiB) would be read from disk each time, or kept in the page cache and
// charged to the agent's memory.
type pluginCopy struct {
	src, dst string
	perm     fs.FileMode
	// equal are src's and dst's stamps when a pass last left them equal;
	// zero when they are not known.
	equal [2]fileStamp
	// compares counts the passes that compared content.
	compares int
}

// fileStamp is what stat tells of a file's content and mode: writing it
// changes its size or change time (which no one can set back, though two
// writes within a clock tick may share it), replacing it the inode.
type fileStamp struct {
	dev, ino     uint64
	mode         uint32
	size         int64
	mtime, ctime int64
}

// sync copies src to dst unless dst holds it already, and reports
// whether it wrote.
func (c *pluginCopy) sync() (bool, error) {
	if c.equal[0] != (fileStamp{}) && c.equal[1] != (fileStamp{}) && c.stamps() == c.equal {
		return false, nil
	}
	c.forget()
	c.compares++
	wrote, err := copyIfChanged(c.src, c.dst, c.perm)
	if err != nil {
		return false, err
	}
	// A change after the pass and before these stats shows as an event
	// on dst's directory, which calls forget.
	c.equal = c.stamps()
	return wrote, nil
}

// forget makes the next pass compare content.
func (c *pluginCopy) forget() { c.equal = [2]fileStamp{} }

func (c *pluginCopy) stamps() [2]fileStamp {
	s, _ := statStamp(c.src)
	d, _ := statStamp(c.dst)
	return [2]fileStamp{s, d}
}

// copyIfChanged copies src to dst (mode perm) unless dst already has the
// same content; it reports whether it wrote. Both are streamed, never read
// whole: the plugin binary is tens of megabytes, and the node agent's
// memory is paid on every node.
func copyIfChanged(src, dst string, perm fs.FileMode) (bool, error) {
	f, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	defer f.Close()
	defer dropCache(f)
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	return copyFileIfChanged(f, fi.Size(), dst, perm)
}

// copyFileIfChanged is copyIfChanged from an open file of size bytes when
// it was opened. A file replaced by a rename meanwhile does not matter
// (the open one is read whole); one truncated or grown in place is an
// error, and dst is left as it was.
func copyFileIfChanged(src *os.File, size int64, dst string, perm fs.FileMode) (bool, error) {
	if same, err := sameContent(src, size, dst); err != nil {
		return false, err
	} else if same {
		if di, err := os.Stat(dst); err == nil && di.Mode().Perm() == perm {
			return false, nil
		}
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	return true, writeAtomicFrom(dst, perm, func(w io.Writer) error {
		// One byte more than expected tells a file that grew.
		n, err := io.Copy(w, io.LimitReader(src, size+1))
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("plugin binary %s changed while being copied (%d bytes, then %d)", src.Name(), size, n)
		}
		return nil
	})
}

// sameContent reports whether the file at path holds exactly the size
// bytes of src, read from its start in chunks.
func sameContent(src *os.File, size int64, path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	defer dropCache(f)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false, err
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	const chunk = 64 << 10
	a, b := make([]byte, chunk), make([]byte, chunk)
	for {
		na, ea := io.ReadFull(src, a)
		nb, eb := io.ReadFull(f, b)
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, fmt.Errorf("reading plugin binary: %w", ea)
		}
		if eb != nil {
			return false, nil
		}
	}
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
