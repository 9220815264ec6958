package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/meshstate/localconfig"
	"github.com/skiffmesh/skiff/pkg/meshstate/xdssource"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// source is where state and certificates come from.
type source struct {
	run     func(context.Context) error
	status  func(*meshstate.Store) map[string]any
	certs   *identity.Manager
	bundles *identity.Bundles
}

func newSource(ctx context.Context, cfg Config, td spiffeid.TrustDomain, store *meshstate.Store, logger *slog.Logger) (*source, error) {
	if cfg.LocalConfig != "" {
		return newLocalSource(cfg, td, store, logger)
	}
	if cfg.XDS != "" {
		return newXDSSource(ctx, cfg, td, store, logger)
	}
	return nil, errors.New("no configuration source: set a local config file or an xDS address")
}

func newLocalSource(cfg Config, td spiffeid.TrustDomain, store *meshstate.Store, logger *slog.Logger) (*source, error) {
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
		status:  func(st *meshstate.Store) map[string]any { return localSourceStatus(src, st, cfg.LocalConfig) },
		certs:   newIdentityManager(identity.LocalCAClient{CA: ca}, cfg, logger),
		bundles: identity.NewBundles(ca.Bundle()),
	}, nil
}

// newXDSSource takes workloads, services and policies from the control
// plane over delta ADS, and certificates from its CA, asking for each
// local workload's identity with ImpersonatedIdentity.
func newXDSSource(ctx context.Context, cfg Config, td spiffeid.TrustDomain, store *meshstate.Store, logger *slog.Logger) (*source, error) {
	roots, err := identity.ReadRootsFile(cfg.XDSRootCert)
	if err != nil {
		return nil, fmt.Errorf("mesh %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	src := xdssource.New(store)
	client, err := xds.NewClient(xds.ClientOptions{
		Address:       cfg.XDS,
		NodeID:        "ztunnel~" + cfg.NodeName,
		NodeMetadata:  map[string]string{"NODE_NAME": cfg.NodeName, "CLUSTER_ID": cfg.ClusterID},
		Subscriptions: src.Subscriptions(),
		TokenFile:     cfg.TokenFile,
		Roots:         pool,
		ServerName:    cfg.XDSServerName,
		Logger:        logger,
	})
	if err != nil {
		return nil, fmt.Errorf("xDS client: %w", err)
	}
	caAddr := cfg.CAAddress
	if caAddr == "" {
		caAddr = cfg.XDS
	}
	ca, err := caclient.New(caclient.Options{
		Address:     caAddr,
		ServerName:  cfg.XDSServerName,
		Roots:       pool,
		TokenFile:   cfg.TokenFile,
		Impersonate: true,
	})
	if err != nil {
		return nil, fmt.Errorf("CA client: %w", err)
	}
	return &source{
		run: func(ctx context.Context) error {
			go src.Run(ctx, client.Ready())
			err := client.Run(ctx)
			ca.Close()
			return err
		},
		status: func(st *meshstate.Store) map[string]any {
			return map[string]any{"source": "xds", "address": cfg.XDS, "ca": caAddr, "version": st.Version(), "loaded": st.IsLoaded()}
		},
		certs:   newIdentityManager(ca, cfg, logger),
		bundles: identity.NewBundles(x509bundle.FromX509Authorities(td, roots)),
	}, nil
}
