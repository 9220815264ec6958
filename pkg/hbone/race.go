package hbone

import (
	"context"
	"time"
)

// raceResult is how a race between two connection attempts ended.
type raceResult[T any] struct {
	val T
	// fallback: the second attempt won.
	fallback bool
	// firstErr is why the first attempt failed, if it did before the
	// race ended; nil when it won, or lost only by being slower.
	firstErr error
	// err is set when both failed: the second attempt's error.
	err error
}

// race runs the connection attempts of happy eyeballs (RFC 8305 §5):
// first alone, then second as well once first has failed or has not
// succeeded within delay. The first to succeed wins. The other attempt
// runs on in the background and discard is given what it yields, so
// that the loser is closed and not left behind.
func race[T any](ctx context.Context, clk clock, delay time.Duration,
	first, second func(context.Context) (T, error), discard func(T)) raceResult[T] {
	type outcome struct {
		val      T
		err      error
		fallback bool
	}
	// Buffered for both, so the loser never blocks.
	results := make(chan outcome, 2)
	start := func(f func(context.Context) (T, error), fallback bool) {
		go func() {
			v, err := f(ctx)
			results <- outcome{v, err, fallback}
		}()
	}
	start(first, false)
	timer := clk.NewTimer(delay)
	defer timer.Stop()
	running, secondStarted := 1, false
	startSecond := func() {
		if !secondStarted {
			secondStarted = true
			running++
			start(second, true)
		}
	}
	var res raceResult[T]
	for {
		select {
		case o := <-results:
			running--
			if o.err == nil {
				if running > 0 {
					go func() {
						if late := <-results; late.err == nil {
							discard(late.val)
						}
					}()
				}
				return raceResult[T]{val: o.val, fallback: o.fallback, firstErr: res.firstErr}
			}
			if o.fallback {
				res.err = o.err
			} else {
				res.firstErr = o.err
			}
			if running == 0 && secondStarted {
				return res
			}
			startSecond()
		case <-timer.C():
			startSecond()
		}
	}
}
