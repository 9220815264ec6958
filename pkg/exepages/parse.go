package exepages

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// span is one mapping's address range, [start, end).
type span struct{ start, end uintptr }

// releasable returns the mappings of the file at path that are not
// writable and hold no anonymous page, from the format of
// /proc/<pid>/smaps: a header per mapping, as in /proc/<pid>/maps,
//
//	00400000-005e9000 r-xp 00000000 fd:01 1234   /usr/bin/ztunnel
//
// then "Key: value" lines. A read-only mapping can hold anonymous pages:
// the relocations a dynamic loader wrote before making it read-only
// (RELRO). MADV_DONTNEED would discard them, so such a mapping, or one
// whose Anonymous line is missing, is never returned.
func releasable(r io.Reader, path string) ([]span, error) {
	var spans []span
	var cur *span // the current mapping, if it is a candidate
	anonZero := false
	end := func() {
		if cur != nil && anonZero {
			spans = append(spans, *cur)
		}
		cur, anonZero = nil, false
	}
	s := bufio.NewScanner(r)
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			if f[0] == "Anonymous:" && cur != nil {
				anonZero = len(f) >= 2 && f[1] == "0"
			}
			continue
		}
		end()
		// Five fields, then the path, which may hold spaces.
		if len(f) < 5 {
			return nil, fmt.Errorf("smaps line %d: %d fields, want at least 5: %q", n, len(f), line)
		}
		perms := f[1]
		if len(perms) != 4 {
			return nil, fmt.Errorf("smaps line %d: permissions %q", n, perms)
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("smaps line %d: range %q", n, f[0])
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		stop, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || stop <= start || uint64(uintptr(stop)) != stop {
			return nil, fmt.Errorf("smaps line %d: range %q", n, f[0])
		}
		if len(f) >= 6 && pathOf(line) == path && perms[1] == '-' {
			cur = &span{uintptr(start), uintptr(stop)}
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	end()
	return spans, nil
}

// pathOf is what follows a header line's fifth field, the mapped file's
// path.
func pathOf(line string) string {
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			return ""
		}
		rest = rest[i:]
	}
	return strings.TrimLeft(rest, " \t")
}

// parseStatmShared returns the third field of /proc/<pid>/statm.
func parseStatmShared(b []byte) (int64, error) {
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, fmt.Errorf("statm %q: want at least 3 fields", b)
	}
	n, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("statm %q: shared pages %q", b, f[2])
	}
	return n, nil
}
