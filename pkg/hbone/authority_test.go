package hbone

import (
	"net/netip"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	good := map[string]string{
		"10.0.0.1:80":            "10.0.0.1:80",
		"[fd00::1]:15008":        "[fd00::1]:15008",
		"[::ffff:1.2.3.4]:443":   "[::ffff:1.2.3.4]:443",
		"255.255.255.255:65535":  "255.255.255.255:65535",
		"[2001:db8:0:0::1]:8080": "[2001:db8::1]:8080",
	}
	for in, want := range good {
		ap, err := ParseAuthority(in)
		if err != nil || ap.String() != want {
			t.Errorf("ParseAuthority(%q) = %v, %v; want %s", in, ap, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "host:80",
		"fd00::1:80", "[fd00::1]", "[fe80::1%eth0]:80", "10.0.0.1:080", " 10.0.0.1:80",
		"10.0.0.1:+80", "[10.0.0.1]:80", "10.0.0.1:80 ", "[fd00::1:80"} {
		if ap, err := ParseAuthority(in); err == nil {
			t.Errorf("ParseAuthority(%q) = %v, want error", in, ap)
		}
	}
}

func TestParseForwarded(t *testing.T) {
	good := map[string]netip.AddrPort{
		`for="10.0.0.2:4567"`:            netip.MustParseAddrPort("10.0.0.2:4567"),
		`for="[fd00::2]:4567"`:           netip.MustParseAddrPort("[fd00::2]:4567"),
		`for=10.0.0.2`:                   netip.MustParseAddrPort("10.0.0.2:0"),
		`for="[fd00::2]"`:                netip.MustParseAddrPort("[fd00::2]:0"),
		`proto=http;For="10.0.0.2:1"`:    netip.MustParseAddrPort("10.0.0.2:1"),
		`for="10.0.0.2:1", for=10.0.0.3`: netip.MustParseAddrPort("10.0.0.2:1"),
		`by="a;b";for="10.0.0.2:1"`:      netip.MustParseAddrPort("10.0.0.2:1"),
	}
	for in, want := range good {
		ap, err := ParseForwarded(in)
		if err != nil || ap != want {
			t.Errorf("ParseForwarded(%q) = %v, %v; want %v", in, ap, err, want)
		}
	}
	for _, in := range []string{"", "for", `for="unknown"`, `for=_hidden`, `for=fd00::1`,
		`proto=http`, `for="10.0.0.1:80\"`, `for=[fe80::1%eth0]`} {
		if ap, err := ParseForwarded(in); err == nil {
			t.Errorf("ParseForwarded(%q) = %v, want error", in, ap)
		}
	}
	if got := FormatForwarded(netip.MustParseAddrPort("[fd00::2]:7")); got != `for="[fd00::2]:7"` {
		t.Errorf("FormatForwarded = %s", got)
	}
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80", "[fd00::1]:15008", "[fe80::1%eth0]:80", "a:b", "[::]:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" {
			t.Fatalf("ParseAuthority(%q) accepted %v", s, ap)
		}
		// What we accept must survive a round trip through the wire form.
		back, err := ParseAuthority(FormatAuthority(ap))
		if err != nil || back != ap {
			t.Fatalf("round trip of %q: %v, %v", s, back, err)
		}
	})
}

func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{`for="10.0.0.2:4567"`, `for="[fd00::2]:1"`, `for=1.2.3.4;proto=http`, `by=";"`, `for="\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseForwarded(s)
		if err != nil {
			return
		}
		if !ap.IsValid() || ap.Addr().Zone() != "" {
			t.Fatalf("ParseForwarded(%q) accepted %v", s, ap)
		}
		if ap.Port() != 0 {
			back, err := ParseForwarded(FormatForwarded(ap))
			if err != nil || back != ap {
				t.Fatalf("round trip of %q: %v, %v", s, back, err)
			}
		}
	})
}
