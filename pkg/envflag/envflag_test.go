package envflag

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestEnvironmentThenCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		addr    string
		n       int
		on      bool
		d       time.Duration
		wantErr string
	}{
		{name: "defaults", addr: "def", n: 1, d: time.Second},
		{name: "environment", env: map[string]string{"T_ADDR": "env", "T_N": "7", "T_ON": "true", "T_D": "3s"}, addr: "env", n: 7, on: true, d: 3 * time.Second},
		{name: "command line wins", env: map[string]string{"T_ADDR": "env", "T_N": "7"}, args: []string{"--addr=cli", "--n=9"}, addr: "cli", n: 9, d: time.Second},
		{name: "malformed variable", env: map[string]string{"T_N": "seven"}, wantErr: `T_N="seven"`},
		{name: "malformed even when the flag is given", env: map[string]string{"T_D": "soon"}, args: []string{"--d=2s"}, wantErr: `T_D="soon"`},
		{name: "positional arguments", args: []string{"extra"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			f := New("test")
			var addr string
			var n int
			var on bool
			var d time.Duration
			f.StringVar(&addr, "addr", "T_ADDR", "def", "address")
			f.IntVar(&n, "n", "T_N", 1, "count")
			f.BoolVar(&on, "on", "T_ON", false, "switch")
			f.DurationVar(&d, "d", "T_D", time.Second, "delay")
			err := f.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != tc.addr || n != tc.n || on != tc.on || d != tc.d {
				t.Fatalf("got %q %d %v %v, want %q %d %v %v", addr, n, on, d, tc.addr, tc.n, tc.on, tc.d)
			}
			if u := f.Lookup("addr").Usage; u != "address (env T_ADDR)" {
				t.Fatalf("usage %q does not name the variable", u)
			}
		})
	}
}

func TestParsePrefixed(t *testing.T) {
	t.Setenv("P_XDS_ADDRESS", "x:1")
	fs := flag.NewFlagSet("p", flag.ContinueOnError)
	addr := fs.String("xds-address", "", "")
	if err := ParsePrefixed(fs, nil, "P_"); err != nil {
		t.Fatal(err)
	}
	if *addr != "x:1" {
		t.Fatalf("xds-address %q", *addr)
	}
}
