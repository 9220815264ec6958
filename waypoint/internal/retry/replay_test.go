package retry

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// source is an original body that records whether it was closed, and
// returns short reads to exercise partial reads.
type source struct {
	r      io.Reader
	mu     sync.Mutex
	closed bool
}

func newSource(body []byte) *source { return &source{r: iotest.HalfReader(bytes.NewReader(body))} }

func (s *source) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *source) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func mustReplay(t *testing.T, b *ReplayBody) io.ReadCloser {
	t.Helper()
	r, ok := b.Replay()
	if !ok {
		t.Fatal("Replay refused")
	}
	return r
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return p
}

func TestReplaySmallBodyManyTimes(t *testing.T) {
	body := []byte("the quick brown fox jumps over the lazy dog")
	for _, length := range []int64{-1, int64(len(body))} {
		src := newSource(body)
		b := NewReplayBody(src, length, 0)
		for i := range 50 {
			r := mustReplay(t, b)
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("attempt %d read %q, %v", i, got, err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if src.isClosed() {
				t.Fatal("closing an attempt closed the original")
			}
		}
		if err := b.Close(); err != nil || !src.isClosed() {
			t.Fatalf("Close: %v, original closed %v", err, src.isClosed())
		}
	}
}

func TestReplayAfterPartialRead(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	b := NewReplayBody(newSource(body), -1, 0)
	first := mustReplay(t, b)
	readN(t, first, 1234)
	second := mustReplay(t, b)
	readN(t, second, 10) // from the recording
	third := mustReplay(t, b)
	got, err := io.ReadAll(third)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("replay after a partial read: %d bytes, %v", len(got), err)
	}
	for _, stale := range []io.Reader{first, second} {
		if _, err := stale.Read(make([]byte, 1)); !errors.Is(err, ErrSuperseded) {
			t.Fatalf("superseded attempt read: %v, want ErrSuperseded", err)
		}
	}
}

func TestReplayLimit(t *testing.T) {
	body := bytes.Repeat([]byte{'x'}, 100)
	tests := []struct {
		name   string
		length int64
		limit  int
		read   int
		ok     bool
	}{
		{"exactly the limit", -1, 10, 10, true},
		{"one past the limit", -1, 10, 11, false},
		{"all of it, over the limit", -1, 10, 100, false},
		{"all of it, within the limit", -1, 100, 100, true},
		{"known too long, nothing read", 100, 10, 0, true},
		{"known too long, one byte read", 100, 10, 1, false},
		{"declared short but longer", 5, 10, 11, false},
		{"no recording, nothing read", -1, -1, 0, true},
		{"no recording, one byte read", -1, -1, 1, false},
		{"default limit", -1, 0, 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewReplayBody(newSource(body), tt.length, tt.limit)
			readN(t, mustReplay(t, b), tt.read)
			r, ok := b.Replay()
			if ok != tt.ok {
				t.Fatalf("Replay ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("replayed %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestReplayEmptyBodies(t *testing.T) {
	for _, body := range []io.ReadCloser{nil, io.NopCloser(strings.NewReader(""))} {
		b := NewReplayBody(body, 0, 0)
		for range 3 {
			got, err := io.ReadAll(mustReplay(t, b))
			if err != nil || len(got) != 0 {
				t.Fatalf("empty body read %q, %v", got, err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReplayClose(t *testing.T) {
	b := NewReplayBody(newSource([]byte("abcdef")), -1, 0)
	r := mustReplay(t, b)
	readN(t, r, 3)
	r.Close()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrBodyClosed) {
		t.Fatalf("read after the attempt's Close: %v", err)
	}
	r = mustReplay(t, b)
	if got := readN(t, r, 6); string(got) != "abcdef" {
		t.Fatalf("read %q", got)
	}
	b.Close()
	b.Close() // twice is harmless
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrBodyClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, ok := b.Replay(); ok {
		t.Fatal("Replay after Close")
	}
	if b.buf != nil {
		t.Fatal("Close kept the recording")
	}
}

type failingReader struct{ n int }

var errUpload = errors.New("client went away")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errUpload
	}
	n := copy(p, bytes.Repeat([]byte{'y'}, min(f.n, len(p))))
	f.n -= n
	return n, nil
}

func TestReplaySourceError(t *testing.T) {
	b := NewReplayBody(io.NopCloser(&failingReader{n: 5}), -1, 0)
	got, err := io.ReadAll(mustReplay(t, b))
	if !errors.Is(err, errUpload) || len(got) != 5 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if _, ok := b.Replay(); ok {
		t.Fatal("a body whose upload failed was replayable")
	}
}

// TestReplaySupersededReaderStillReading plays a transport that goes on
// reading the old attempt's body in its own goroutine while the next
// attempt starts: either may take bytes from the original first, and the
// next attempt must read the whole body regardless.
func TestReplaySupersededReaderStillReading(t *testing.T) {
	body := bytes.Repeat([]byte("abc"), 1000)
	pr, pw := io.Pipe()
	b := NewReplayBody(pr, -1, 0)
	first := mustReplay(t, b)
	stale := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, first)
		stale <- err
	}()
	second := mustReplay(t, b) // must not wait for the stale read
	writer := make(chan error, 1)
	go func() {
		_, err := pw.Write(body)
		pw.Close()
		writer <- err
	}()
	got, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the next attempt read %d of %d bytes, %v", len(got), len(body), err)
	}
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	if err := <-stale; err != nil && !errors.Is(err, ErrSuperseded) {
		t.Fatalf("the stale reader ended with %v", err)
	}
	b.Close()
}

// TestReplayLostBytes: when nothing is recorded, a superseded reader that
// takes bytes from the original makes the next attempt fail cleanly.
func TestReplayLostBytes(t *testing.T) {
	pr, pw := io.Pipe()
	b := NewReplayBody(pr, 100, 10) // known too long: not recorded
	first := mustReplay(t, b)
	second := mustReplay(t, b)
	// first was superseded before it read: it reads nothing.
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("superseded read: %v", err)
	}
	go pw.Write([]byte("hello"))
	if got := readN(t, second, 5); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	if _, ok := b.Replay(); ok {
		t.Fatal("an unrecorded body was replayable after a read")
	}
	pw.Close()
}

// FuzzReplay drives a ReplayBody through a sequence of operations and
// checks it against a model: every attempt reads a prefix of the body,
// Replay succeeds exactly when everything read from the original was
// kept, and an attempt read to its end has the whole body.
func FuzzReplay(f *testing.F) {
	f.Add([]byte("hello, world"), int8(8), false, []byte{0, 5, 1, 3, 1, 0, 2, 2, 1, 3})
	f.Add(bytes.Repeat([]byte{7}, 300), int8(100), true, []byte{3, 1, 3, 1, 0, 50})
	f.Add([]byte{}, int8(0), true, []byte{1, 3, 1, 3})
	f.Fuzz(func(t *testing.T, body []byte, limit int8, known bool, ops []byte) {
		length := int64(-1)
		if known {
			length = int64(len(body))
		}
		lim := int(limit)
		if lim == 0 {
			lim = DefaultReplayLimit
		}
		b := NewReplayBody(io.NopCloser(iotest.HalfReader(bytes.NewReader(body))), length, int(limit))
		defer b.Close()

		// The model.
		recording := lim >= 0 && length <= int64(lim)
		consumed := 0 // bytes taken from the original
		var cur io.ReadCloser
		var got []byte // what cur has read
		curClosed := false

		replay := func() {
			r, ok := b.Replay()
			want := consumed == 0 || recording && consumed <= lim
			if ok != want {
				t.Fatalf("Replay ok = %v after %d bytes consumed (limit %d, length %d), want %v", ok, consumed, lim, length, want)
			}
			if ok {
				cur, got, curClosed = r, nil, false
			}
		}
		read := func(n int) {
			if cur == nil {
				return
			}
			p := make([]byte, n)
			k, err := cur.Read(p)
			got = append(got, p[:k]...)
			if !bytes.HasPrefix(body, got) {
				t.Fatalf("attempt read %q, not a prefix of %q", got, body)
			}
			consumed = max(consumed, len(got))
			switch {
			case curClosed && !errors.Is(err, ErrBodyClosed):
				t.Fatalf("read on a closed attempt: %v", err)
			case !curClosed && err != nil && err != io.EOF:
				t.Fatalf("read: %v", err)
			case err == io.EOF && len(got) != len(body):
				t.Fatalf("EOF after %d of %d bytes", len(got), len(body))
			}
		}
		replay()
		for i := 0; i < len(ops); i++ {
			switch ops[i] % 4 {
			case 0:
				n := 1
				if i+1 < len(ops) {
					i++
					n = int(ops[i])
				}
				read(n)
			case 1:
				replay()
			case 2:
				if cur != nil {
					cur.Close()
					curClosed = true
				}
			case 3:
				if cur == nil || curClosed {
					continue
				}
				all, err := io.ReadAll(cur)
				got = append(got, all...)
				consumed = max(consumed, len(got))
				if err != nil || !bytes.Equal(got, body) {
					t.Fatalf("read to the end: %q, %v; want %q", got, err, body)
				}
			}
		}
	})
}

func BenchmarkReplay(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 4<<10)
	p := make([]byte, 1<<10)
	b.ReportAllocs()
	for b.Loop() {
		rb := NewReplayBody(io.NopCloser(bytes.NewReader(body)), int64(len(body)), 0)
		for range 2 {
			r, _ := rb.Replay()
			for {
				if _, err := r.Read(p); err != nil {
					break
				}
			}
		}
		rb.Close()
	}
}

func TestKept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		length int64
		limit  int
		read   int // bytes the attempt reads; -1 reads to the end
		want   string
		ok     bool
	}{
		{"read whole", "hello", 5, 16, -1, "hello", true},
		{"unknown length", "hello", -1, 16, -1, "hello", true},
		{"part unread", "hello", 5, 16, 2, "", false},
		{"too large", "hello world", -1, 4, -1, "", false},
		{"empty", "", 0, 16, -1, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewReplayBody(io.NopCloser(strings.NewReader(tc.body)), tc.length, tc.limit)
			defer b.Close()
			r, ok := b.Replay()
			if !ok {
				t.Fatal("first Replay refused")
			}
			if tc.read < 0 {
				io.Copy(io.Discard, r)
			} else {
				io.CopyN(io.Discard, r, int64(tc.read))
			}
			got, ok := b.Kept()
			if ok != tc.ok || string(got) != tc.want {
				t.Fatalf("Kept() = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
