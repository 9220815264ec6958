package installer

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPluginCopyLeavesNoPageCache: neither copying the plugin nor
// comparing it leaves its pages cached, charged to the agent's memory.
func TestPluginCopyLeavesNoPageCache(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the test directory is on tmpfs, whose pages are the files")
	}
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	write(t, src, string(randomBytes(t, 1<<20)), 0o755)
	// As in an image: written back, so that its pages can go (dirty
	// ones cannot).
	if f, err := os.Open(src); err != nil || f.Sync() != nil {
		t.Fatal("syncing src:", err)
	} else {
		f.Close()
	}
	c := &pluginCopy{src: src, dst: dst, perm: 0o755}
	for _, pass := range []string{"copy", "compare"} {
		c.forget()
		if _, err := c.sync(); err != nil {
			t.Fatalf("%s: %v", pass, err)
		}
		for _, path := range []string{src, dst} {
			if n := residentPages(t, path); n > 0 {
				t.Errorf("after the %s, %d pages of %s are cached", pass, n, filepath.Base(path))
			}
		}
	}
}

// residentPages counts the pages of path in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
