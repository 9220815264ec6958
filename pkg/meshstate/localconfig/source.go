package localconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"

	"github.com/skiffmesh/skiff/pkg/meshstate"
)

// Source keeps a Store, or whatever apply feeds, in sync with a
// configuration file.
type Source struct {
	path  string
	apply func(data []byte) error
	// version reports what was applied, for the log.
	version func() uint64
	log     *slog.Logger

	// OnLoad, if set before Run, is called after every load attempt with
	// its outcome.
	OnLoad func(error)

	mu      sync.Mutex
	lastErr error
}

// NewSource returns a Source that parses the file at path (see Parse)
// into store, as its whole state.
func NewSource(path string, store *meshstate.Store, logger *slog.Logger) *Source {
	return NewFuncSource(path, func(data []byte) error {
		cfg, err := Parse(data)
		if err != nil {
			return err
		}
		if err := store.Replace(cfg); err != nil {
			return err
		}
		store.SetLoaded() // the file is the whole state
		return nil
	}, store.Version, logger)
}

// NewFuncSource returns a Source for a file of another format: apply
// parses and applies the whole file, or returns an error and changes
// nothing. version, if not nil, is logged after each load.
func NewFuncSource(path string, apply func(data []byte) error, version func() uint64, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if version == nil {
		version = func() uint64 { return 0 }
	}
	return &Source{path: path, apply: apply, version: version, log: logger}
}

// Load reads the file once and applies it.
func (s *Source) Load() error {
	err := s.load()
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	if s.OnLoad != nil {
		s.OnLoad(err)
	}
	return err
}

func (s *Source) load() error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("reading config %s: %w", s.path, err)
	}
	if len(data) > MaxFileSize {
		return fmt.Errorf("config %s: larger than %d bytes", s.path, MaxFileSize)
	}
	if err := s.apply(data); err != nil {
		return fmt.Errorf("config %s: %w", s.path, err)
	}
	return nil
}

// LastError is the error of the last load, nil if it succeeded.
func (s *Source) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Run loads the file, then reloads it whenever it changes until ctx is
// done. It fails only if the first load fails or the file cannot be
// watched; later bad versions are logged and rejected, keeping the last
// good state. The directory is watched, so editors that replace the file
// and Kubernetes ConfigMap updates (a symlink swap) are seen.
func (s *Source) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching config: %w", err)
	}
	defer w.Close()
	dir := filepath.Dir(s.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching config directory %s: %w", dir, err)
	}
	if err := s.Load(); err != nil {
		return err
	}
	s.log.Info("local config loaded", "path", s.path, "version", s.version())
	base := filepath.Base(s.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("config watcher closed")
			}
			// ConfigMap volumes swap a "..data" symlink; anything else in
			// the directory is not ours.
			if name := filepath.Base(ev.Name); name != base && name != "..data" {
				continue
			}
			if !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Rename) && !ev.Has(fsnotify.Remove) {
				continue
			}
			if err := s.Load(); err != nil {
				s.log.Error("rejected config; keeping the previous state", "path", s.path, "err", err)
				continue
			}
			s.log.Info("local config reloaded", "path", s.path, "version", s.version())
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("config watcher closed")
			}
			s.log.Warn("config watcher error", "err", err)
		}
	}
}
