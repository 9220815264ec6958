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

// readOnlySpans returns the mappings of the file at path that are not
// writable, from the format of /proc/<pid>/maps:
//
//	00400000-005e9000 r-xp 00000000 fd:01 1234   /usr/bin/ztunnel
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var spans []span
	s := bufio.NewScanner(r)
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		// Five fields, then the path, which may hold spaces.
		f := strings.Fields(line)
		if len(f) < 5 {
			return nil, fmt.Errorf("maps line %d: %d fields, want at least 5: %q", n, len(f), line)
		}
		perms := f[1]
		if len(perms) != 4 {
			return nil, fmt.Errorf("maps line %d: permissions %q", n, perms)
		}
		if len(f) < 6 || pathOf(line) != path || perms[1] != '-' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %d: range %q", n, f[0])
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start || uint64(uintptr(end)) != end {
			return nil, fmt.Errorf("maps line %d: range %q", n, f[0])
		}
		spans = append(spans, span{uintptr(start), uintptr(end)})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading maps: %w", err)
	}
	return spans, nil
}

// pathOf is what follows a maps line's fifth field, the mapped file's path.
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
