package socks5

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

type rw struct {
	io.Reader
	out bytes.Buffer
}

func (r *rw) Write(b []byte) (int, error) { return r.out.Write(b) }

func TestReadRequest(t *testing.T) {
	greeting := "\x05\x02\x02\x00"
	tests := []struct {
		name    string
		in      string
		want    Request
		wantErr string
		reply   string // what the client got after the method selection
	}{
		{name: "ipv4", in: greeting + "\x05\x01\x00\x01\x0a\x00\x00\x01\x1f\x90", want: Request{Addr: netip.MustParseAddrPort("10.0.0.1:8080")}},
		{name: "ipv6", in: greeting + "\x05\x01\x00\x04" + strings.Repeat("\x00", 15) + "\x01\x00\x50", want: Request{Addr: netip.MustParseAddrPort("[::1]:80")}},
		{name: "domain", in: greeting + "\x05\x01\x00\x03\x0bexample.com\x01\xbb", want: Request{Host: "example.com", Port: 443}},
		{name: "ip literal as domain", in: greeting + "\x05\x01\x00\x03\x0810.1.2.3\x00\x50", want: Request{Addr: netip.MustParseAddrPort("10.1.2.3:80")}},
		{name: "bad version", in: "\x04\x01\x00", wantErr: "version 4"},
		{name: "no acceptable method", in: "\x05\x01\x02", wantErr: "no-authentication", reply: ""},
		{name: "bind command", in: greeting + "\x05\x02\x00\x01\x0a\x00\x00\x01\x1f\x90", wantErr: "not CONNECT", reply: "\x05\x07"},
		{name: "unknown address type", in: greeting + "\x05\x01\x00\x09", wantErr: "address type 9", reply: "\x05\x08"},
		{name: "hostile domain", in: greeting + "\x05\x01\x00\x03\x05a b/c\x00\x50", wantErr: "invalid domain", reply: "\x05\x08"},
		{name: "port zero", in: greeting + "\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x00", wantErr: "unusable destination", reply: "\x05\x04"},
		{name: "truncated", in: greeting + "\x05\x01\x00\x01\x0a\x00", wantErr: "reading address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &rw{Reader: strings.NewReader(tt.in)}
			got, err := ReadRequest(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if tt.reply != "" && !strings.HasPrefix(c.out.String()[2:], tt.reply) {
					t.Fatalf("reply %q, want prefix %q", c.out.String(), tt.reply)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if c.out.String() != "\x05\x00" {
				t.Fatalf("method selection %q", c.out.String())
			}
		})
	}
}

func TestWriteReply(t *testing.T) {
	var b bytes.Buffer
	WriteReply(&b, Succeeded, netip.MustParseAddrPort("10.0.0.1:1234"))
	if got := b.String(); got != "\x05\x00\x00\x01\x0a\x00\x00\x01\x04\xd2" {
		t.Fatalf("%q", got)
	}
	b.Reset()
	WriteReply(&b, ConnectionRefused, netip.AddrPort{})
	if got := b.String(); got != "\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00" {
		t.Fatalf("%q", got)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("\x05\x01\x00\x05\x01\x00\x01\x0a\x00\x00\x01\x1f\x90"))
	f.Add([]byte("\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb"))
	f.Add([]byte("\x05\x01\x00\x05\x01\x00\x04" + strings.Repeat("\x00", 15) + "\x01\x00\x50"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &rw{Reader: bytes.NewReader(in)}
		r, err := ReadRequest(c)
		if err != nil {
			if errors.Is(err, ErrProtocol) && c.out.Len() > 2+10 {
				t.Fatalf("wrote too much on error: %q", c.out.Bytes())
			}
			return
		}
		if r.Host == "" && !r.Addr.IsValid() {
			t.Fatalf("accepted request without destination: %+v", r)
		}
		if r.Host != "" && (!validHost(r.Host) || r.Port == 0) {
			t.Fatalf("accepted bad host %+v", r)
		}
	})
}
