package installer

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to drop f's clean pages from the page cache.
// The pages a process reads or writes are charged to its container's
// memory: the plugin binary the agent copies onto the host (14 MiB) would
// otherwise count as the agent's for as long as the node keeps it cached,
// though only the container runtime reads it again. Best effort: a file
// system that keeps its pages (tmpfs) changes nothing else.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// statStamp stats path; ok is false when it cannot.
func statStamp(path string) (fileStamp, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileStamp{}, false
	}
	return fileStamp{
		dev: uint64(st.Dev), ino: uint64(st.Ino), mode: st.Mode, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}, true
}
