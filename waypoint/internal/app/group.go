package app

import (
	"context"
	"log/slog"
	"sync"
)

// group runs background work until its context ends, logging failures.
type group struct {
	ctx context.Context
	log *slog.Logger
	wg  sync.WaitGroup
}

func newGroup(ctx context.Context, log *slog.Logger) *group { return &group{ctx: ctx, log: log} }

func (g *group) run(name string, f func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil && g.ctx.Err() == nil {
			g.log.Error(name+" stopped", "err", err)
		}
	}()
}

func (g *group) wait() { g.wg.Wait() }
