package benchpeer

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"p99 of hundred", ms(seq(1, 100)...), 99, 99 * time.Millisecond},
		{"p100", ms(seq(1, 100)...), 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestRSSOfSelf(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 {
		t.Fatalf("RSS = %d, want > 0", rss)
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS of a missing process: want an error")
	}
}

// TestSelfCPUTime checks that SelfCPUTime grows with work done.
func TestSelfCPUTime(t *testing.T) {
	before, err := SelfCPUTime()
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the clock moves: getrusage counts at least microseconds.
	for {
		after, err := SelfCPUTime()
		if err != nil {
			t.Fatal(err)
		}
		if after < before {
			t.Fatalf("SelfCPUTime went back: %v, then %v", before, after)
		}
		if after > before {
			return
		}
	}
}

func TestSinkAndEcho(t *testing.T) {
	ctx := context.Background()
	sink, err := Sink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	c, err := net.Dial("tcp", sink.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := SendBulk(c, 1<<20+3, 32<<10); err != nil {
		t.Fatalf("SendBulk: %v", err)
	}

	echo, err := Echo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	e, err := net.Dial("tcp", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rtts, err := RoundTrips(e, 1024, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(rtts) != 50 {
		t.Fatalf("got %d round trips, want 50", len(rtts))
	}
}
