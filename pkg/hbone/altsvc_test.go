package hbone

import (
	"strings"
	"testing"
	"time"
)

func TestParseAltSvc(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want altSvc
		bad  bool
	}{
		{in: `h3=":15008"`, want: altSvc{port: 15008, maxAge: DefaultAltSvcMaxAge}},
		{in: `h3=":15008"; ma=3600`, want: altSvc{port: 15008, maxAge: time.Hour}},
		{in: `h3=":15008";ma=60;persist=1`, want: altSvc{port: 15008, maxAge: time.Minute}},
		{in: `h3=":443"; MA="120"`, want: altSvc{port: 443, maxAge: 2 * time.Minute}},
		{in: `  clear `, want: altSvc{clear: true}},
		{in: `h3=":15008"; ma=0`, want: altSvc{port: 15008}},
		{in: FormatAltSvc(15008, time.Hour), want: altSvc{port: 15008, maxAge: time.Hour}},
		// The first h3 on the same host counts; others are skipped.
		{in: `h2=":443", h3="other.example:443", h3=":15009"; ma=10, h3=":1"`, want: altSvc{port: 15009, maxAge: 10 * time.Second}},
		{in: `h3-29=":15008"`, want: altSvc{}},
		{in: `h3="10.0.0.1:15008"`, want: altSvc{}},
		{in: `h3=":0"`, want: altSvc{}},
		{in: `h3=":70000"`, want: altSvc{}},
		{in: `h3=":x"`, want: altSvc{}},
		{in: `h3="\:15008"`, want: altSvc{port: 15008, maxAge: DefaultAltSvcMaxAge}},
		{in: ``, bad: true},
		{in: `h3`, bad: true},
		{in: `h3=`, bad: true},
		{in: `h3=:15008`, bad: true},
		{in: `h3=":15008`, bad: true},
		{in: `h3=":15008"; ma=-1`, bad: true},
		{in: `h3=":15008"; ma=99999999999`, bad: true},
		{in: `h3=":15008"; ma`, bad: true},
		{in: `h3=":15008" junk`, bad: true},
		{in: `h3=":15008",`, bad: true},
		{in: "h3=\":150\x0108\"", bad: true},
		{in: `h3=":15008"; ` + strings.Repeat("p=1;", 300), bad: true},
	} {
		got, err := parseAltSvc(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseAltSvc(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseAltSvc(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseAltSvc: any input gets an answer, and a port only with a
// positive lifetime or with ma=0.
func FuzzParseAltSvc(f *testing.F) {
	for _, s := range []string{`h3=":15008"; ma=3600`, `clear`, `h2=":443", h3=":1"; ma=1`, `h3="\"x"`, `a=""; b="c"; d=e`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAltSvc(s)
		if err != nil {
			if a != (altSvc{}) {
				t.Fatalf("error %v with a result %+v", err, a)
			}
			return
		}
		if a.clear && (a.port != 0 || a.maxAge != 0) {
			t.Fatalf("clear with an alternative: %+v", a)
		}
		if a.maxAge < 0 {
			t.Fatalf("negative max age: %+v", a)
		}
		if a.port == 0 && a.maxAge != 0 {
			t.Fatalf("max age without an alternative: %+v", a)
		}
	})
}
