package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// pipeWith returns the reading end of a pipe whose writer sends data in
// pieces of the sizes chunks gives (cycled; 0 is taken as 1), then
// closes.
func pipeWith(data, chunks []byte) net.Conn {
	r, w := net.Pipe()
	go func() {
		defer w.Close()
		for i, off := 0, 0; off < len(data); i++ {
			n := 1
			if len(chunks) > 0 {
				n = max(1, int(chunks[i%len(chunks)]))
			}
			n = min(n, len(data)-off)
			if _, err := w.Write(data[off : off+n]); err != nil {
				return
			}
			off += n
		}
	}()
	return r
}

// wantDetected is what detect must decide for a client that sends data
// and then closes: HTTP/2 for the whole preface; HTTP/1.x for a method
// token of up to 20 upper-case letters, '-' or '_' and a space (unless
// those bytes are also the start of the preface and the client stops
// there); TCP for anything else.
func wantDetected(data []byte) config.Protocol {
	if bytes.HasPrefix(data, []byte(h2Preface)) {
		return config.HTTP2
	}
	if bytes.HasPrefix([]byte(h2Preface), data) {
		return config.TCP // part of a preface, then the end
	}
	for i, c := range data {
		switch {
		case c == ' ' && i > 0 && i <= 20:
			return config.HTTP
		case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
			continue
		}
		break
	}
	return config.TCP
}

func FuzzDetect(f *testing.F) {
	for _, s := range []string{"", "GET / HTTP/1.1\r\n", h2Preface + "\x00\x00\x00\x04", "PRI * HTTP/1.1\r\n", "PRI", "\x16\x03\x01\x02\x00",
		"SSH-2.0-OpenSSH\r\n", "ABCDEFGHIJKLMNOPQRSTU V", "M-SEARCH * HTTP/1.1", "hello"} {
		f.Add([]byte(s), []byte{1, 3, 100})
	}
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		if len(data) > 64 {
			data = data[:64]
		}
		c := pipeWith(data, chunks)
		defer c.Close()
		p, read, err := detect(c, 10*time.Second) // the writer closes long before
		if len(data) == 0 {
			if err == nil && p != config.TCP {
				t.Fatalf("nothing sent: %v", p)
			}
			return
		}
		if err != nil {
			t.Fatalf("detect: %v", err)
		}
		if !bytes.HasPrefix(data, read) {
			t.Fatalf("read %q is not how %q starts", read, data)
		}
		if want := wantDetected(data); p != want {
			t.Fatalf("detect(%q) = %v, want %v", data, p, want)
		}
		// What detect read and what is left make up what was sent.
		rest, _ := io.ReadAll(&prefixConn{Conn: c, prefix: read})
		if !bytes.Equal(rest, data) {
			t.Fatalf("replayed %q, sent %q", rest, data)
		}
	})
}

func FuzzSniffPreface(f *testing.F) {
	for _, s := range []string{"", "GET / HTTP/1.1\r\n", h2Preface + "\x00\x00\x00\x04", "PRI * HTTP/1.1\r\n", "PRI", "POST /"} {
		f.Add([]byte(s), []byte{2, 7})
	}
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		if len(data) > 64 {
			data = data[:64]
		}
		c := pipeWith(data, chunks)
		defer c.Close()
		h2, read, err := sniffPreface(c, 10*time.Second)
		if len(data) == 0 {
			if err == nil {
				t.Fatal("nothing sent, no error")
			}
			return
		}
		if err != nil && !h2 {
			t.Fatalf("sniffPreface(%q): %v", data, err)
		}
		if want := bytes.HasPrefix(data, []byte(h2Preface)); h2 != want {
			t.Fatalf("sniffPreface(%q) = %v, want %v", data, h2, want)
		}
		if !bytes.HasPrefix(data, read) {
			t.Fatalf("read %q is not how %q starts", read, data)
		}
		// It stops once it knows: it never reads past the preface's
		// length, and it did not stop while what it read could still be
		// a preface, unless the client stopped sending.
		if len(read) > len(h2Preface) {
			t.Fatalf("read %d bytes, more than a preface", len(read))
		}
		if !h2 && bytes.HasPrefix([]byte(h2Preface), read) && len(read) < len(data) {
			t.Fatalf("stopped after %q of %q, which could still be a preface", read, data)
		}
		rest, _ := io.ReadAll(&prefixConn{Conn: c, prefix: read})
		if !bytes.Equal(rest, data) {
			t.Fatalf("replayed %q, sent %q", rest, data)
		}
	})
}
