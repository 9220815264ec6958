package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/ztunnel/internal/localconfig"
	"github.com/skiffmesh/skiff/ztunnel/internal/state"
)

// source is where state and certificates come from.
type source struct {
	run     func(context.Context) error
	status  func(*state.Store) map[string]any
	certs   *identity.Manager
	bundles *identity.Bundles
}

func newSource(ctx context.Context, cfg Config, td spiffeid.TrustDomain, store *state.Store, logger *slog.Logger) (*source, error) {
	if cfg.LocalConfig != "" {
		return newLocalSource(cfg, td, store, logger)
	}
	if cfg.XDS != "" {
		return newXDSSource(ctx, cfg, td, store, logger)
	}
	return nil, errors.New("no configuration source: set a local config file or an xDS address")
}

func newLocalSource(cfg Config, td spiffeid.TrustDomain, store *state.Store, logger *slog.Logger) (*source, error) {
	if cfg.CACert == "" || cfg.CAKey == "" {
		return nil, errors.New("local mode needs a CA certificate and key to sign workload certificates")
	}
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: td, CertFile: cfg.CACert, KeyFile: cfg.CAKey, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	src := localconfig.NewSource(cfg.LocalConfig, store, logger)
	// Fail start-up on a bad file rather than run with no state.
	if err := src.Load(); err != nil {
		return nil, err
	}
	return &source{
		run:     src.Run,
		status:  func(st *state.Store) map[string]any { return localSourceStatus(src, st, cfg.LocalConfig) },
		certs:   newIdentityManager(identity.LocalCAClient{CA: ca}, cfg, logger),
		bundles: identity.NewBundles(ca.Bundle()),
	}, nil
}

func newXDSSource(ctx context.Context, cfg Config, td spiffeid.TrustDomain, store *state.Store, logger *slog.Logger) (*source, error) {
	return nil, errors.New("xDS mode is not implemented yet")
}
