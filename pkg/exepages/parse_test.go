package exepages

import (
	"reflect"
	"strings"
	"testing"
)

const exe = "/usr/local/bin/ztunnel"

// mapping is one smaps entry: the header and its Anonymous line.
func mapping(header, anon string) string {
	return header + "\nSize:               1024 kB\nRss:                 512 kB\nAnonymous:          " + anon + " kB\nVmFlags: rd ex mr mw me dw\n"
}

func TestReleasable(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		smaps string
		want  []span
	}{{
		name: "code and constants, not data, heap or others",
		smaps: mapping("00400000-0107e000 r-xp 00000000 00:2a 3141   /usr/local/bin/ztunnel", "0") +
			mapping("0107e000-01d5e000 r--p 00c7e000 00:2a 3141   /usr/local/bin/ztunnel", "0") +
			mapping("01d5e000-01dc2000 rw-p 0195e000 00:2a 3141   /usr/local/bin/ztunnel", "0") +
			mapping("01dc2000-01e1a000 rw-p 00000000 00:00 0 ", "0") +
			mapping("c000000000-c000400000 rw-p 00000000 00:00 0 ", "4096") +
			mapping("7f00a0000000-7f00a0021000 r--p 00000000 00:2a 99   /usr/local/bin/ztunnel-helper", "0") +
			mapping("7ffd6e9ff000-7ffd6ea01000 r-xp 00000000 00:00 0                          [vdso]", "0"),
		want: []span{{0x400000, 0x107e000}, {0x107e000, 0x1d5e000}},
	}, {
		name:  "a read-only mapping with anonymous pages (RELRO) is left",
		smaps: mapping("1000-2000 r--p 00000000 00:2a 1 "+exe, "4") + mapping("2000-3000 r-xp 00001000 00:2a 1 "+exe, "0"),
		want:  []span{{0x2000, 0x3000}},
	}, {
		name:  "a mapping without an Anonymous line is left",
		smaps: "1000-2000 r-xp 00000000 00:2a 1 " + exe + "\nRss: 4 kB\n" + mapping("2000-3000 r--p 00001000 00:2a 1 "+exe, "0"),
		want:  []span{{0x2000, 0x3000}},
	}, {
		name:  "the last mapping counts",
		smaps: "1000-2000 r-xp 00000000 00:2a 1 " + exe + "\nAnonymous: 0 kB",
		want:  []span{{0x1000, 0x2000}},
	}, {
		name:  "a path with spaces",
		path:  "/opt/my tools/zt",
		smaps: mapping("1000-2000 r-xp 00000000 00:2a 1 /opt/my tools/zt", "0") + mapping("2000-3000 r-xp 00000000 00:2a 1 /opt/my", "0"),
		want:  []span{{0x1000, 0x2000}},
	}, {
		name:  "writable mappings are left",
		smaps: mapping("1000-2000 rw-s 00000000 00:2a 1 "+exe, "0") + mapping("3000-4000 -w-p 00000000 00:2a 1 "+exe, "0"),
	}, {
		name: "empty",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = exe
			}
			got, err := releasable(strings.NewReader(tt.smaps), path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %x, want %x", got, tt.want)
			}
		})
	}
}

func TestReleasableRejects(t *testing.T) {
	for _, smaps := range []string{
		"1000-2000 r-xp 00000000\n",
		"1000-2000 r-x 00000000 00:2a 1 " + exe + "\n",
		"10002000 r-xp 00000000 00:2a 1 " + exe + "\n",
		"2000-1000 r-xp 00000000 00:2a 1 " + exe + "\n",
		"1000-1000 r-xp 00000000 00:2a 1 " + exe + "\n",
		"x-2000 r-xp 00000000 00:2a 1 " + exe + "\n",
		"1000-10000000000000000 r-xp 00000000 00:2a 1 " + exe + "\n",
	} {
		if got, err := releasable(strings.NewReader(smaps), exe); err == nil {
			t.Errorf("%q: got %x, want an error", smaps, got)
		}
	}
}

func TestParseStatmShared(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1234 567 89 10 0 300 0\n", 89, true},
		{"1 2 3", 3, true},
		{"1 2", 0, false},
		{"1 2 -3 4", 0, false},
		{"1 2 x 4", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseStatmShared([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseStatmShared(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzReleasable checks that any input gives spans that are non-empty
// ranges, or an error, and never a panic.
func FuzzReleasable(f *testing.F) {
	f.Add(mapping("00400000-0107e000 r-xp 00000000 00:2a 3141   "+exe, "0"))
	f.Add(mapping("1000-2000 rw-p 0 0 0 "+exe, "0") + "1-2 r--p 0 0 0 /x y\nAnonymous: 0 kB\n")
	f.Add("1 2 3 4 5 6 7\nAnonymous: 0\n")
	f.Fuzz(func(t *testing.T, smaps string) {
		spans, err := releasable(strings.NewReader(smaps), exe)
		if err != nil {
			return
		}
		for _, s := range spans {
			if s.end <= s.start {
				t.Fatalf("span %x: empty or reversed", s)
			}
		}
	})
}

func FuzzParseStatmShared(f *testing.F) {
	f.Add([]byte("1234 567 89 10 0 300 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := parseStatmShared(b); err == nil && n < 0 {
			t.Fatalf("%q: negative %d", b, n)
		}
	})
}
