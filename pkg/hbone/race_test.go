package hbone

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeAttempt is a connection attempt the test ends by hand.
type fakeAttempt struct {
	name    string
	started chan struct{}
	result  chan error
}

func newFakeAttempt(name string) *fakeAttempt {
	return &fakeAttempt{name: name, started: make(chan struct{}), result: make(chan error, 1)}
}

func (a *fakeAttempt) run(ctx context.Context) (string, error) {
	close(a.started)
	if err := <-a.result; err != nil {
		return "", err
	}
	return a.name, nil
}

func (a *fakeAttempt) wasStarted() bool {
	select {
	case <-a.started:
		return true
	default:
		return false
	}
}

// TestRace drives happy eyeballs with a fake clock: which attempt runs
// when, which wins, and that a late winner is discarded. Nothing sleeps:
// each step waits for the race to reach the point it tests.
func TestRace(t *testing.T) {
	const delay = 300 * time.Millisecond
	errQUIC, errTCP := errors.New("quic failed"), errors.New("tcp failed")
	type outcome struct {
		res raceResult[string]
	}
	for _, tc := range []struct {
		name string
		// script runs the attempts; the race's result is then checked.
		script       func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt)
		want         string
		fallback     bool
		firstErr     error
		err          error
		discarded    string
		tcpNeverRuns bool
	}{
		{
			name: "QUIC connects within the delay: TCP never starts",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				<-clk.timerMade
				clk.Advance(delay - time.Millisecond)
				quic.result <- nil
			},
			want: "quic", tcpNeverRuns: true,
		},
		{
			name: "QUIC silent past the delay: TCP starts and wins, QUIC is discarded when it connects",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				<-clk.timerMade
				clk.Advance(delay)
				<-tcp.started
				tcp.result <- nil
			},
			want: "tcp", fallback: true, discarded: "quic",
		},
		{
			name: "QUIC fails at once: TCP starts without waiting",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				quic.result <- errQUIC
				<-tcp.started
				tcp.result <- nil
			},
			want: "tcp", fallback: true, firstErr: errQUIC,
		},
		{
			name: "both running, QUIC connects first: TCP is discarded",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				<-clk.timerMade
				clk.Advance(delay)
				<-tcp.started
				quic.result <- nil
			},
			want: "quic", discarded: "tcp",
		},
		{
			name: "TCP fails first, QUIC connects later: QUIC wins",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				<-clk.timerMade
				clk.Advance(delay)
				<-tcp.started
				tcp.result <- errTCP
				quic.result <- nil
			},
			want: "quic",
		},
		{
			name: "both fail",
			script: func(t *testing.T, clk *fakeClock, quic, tcp *fakeAttempt) {
				<-quic.started
				quic.result <- errQUIC
				<-tcp.started
				tcp.result <- errTCP
			},
			fallback: false, firstErr: errQUIC, err: errTCP,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			quic, tcp := newFakeAttempt("quic"), newFakeAttempt("tcp")
			discarded := make(chan string, 2)
			done := make(chan outcome, 1)
			go func() {
				done <- outcome{race(t.Context(), clk, delay, quic.run, tcp.run, func(v string) { discarded <- v })}
			}()
			tc.script(t, clk, quic, tcp)
			r := (<-done).res
			if r.val != tc.want || r.fallback != tc.fallback || !errors.Is(r.firstErr, tc.firstErr) || !errors.Is(r.err, tc.err) {
				t.Fatalf("race = %+v, want val %q fallback %v firstErr %v err %v", r, tc.want, tc.fallback, tc.firstErr, tc.err)
			}
			if tc.tcpNeverRuns && tcp.wasStarted() {
				t.Fatal("TCP started although QUIC connected within the delay")
			}
			if tc.discarded != "" {
				// The loser ends after the race did, and is discarded.
				loser := map[string]*fakeAttempt{"quic": quic, "tcp": tcp}[tc.discarded]
				loser.result <- nil
				if got := <-discarded; got != tc.discarded {
					t.Fatalf("discarded %q, want %q", got, tc.discarded)
				}
			}
			select {
			case got := <-discarded:
				t.Fatalf("%q discarded too", got)
			default:
			}
		})
	}
}
