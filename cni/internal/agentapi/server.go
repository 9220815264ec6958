package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Backend carries out the plugin's requests.
type Backend interface {
	Add(ctx context.Context, req *AddRequest) error
	Check(ctx context.Context, req *CheckRequest) error
	Del(ctx context.Context, req *DelRequest) error
	// Ready returns nil when the agent can enrol pods.
	Ready() error
}

// Handler serves the plugin's requests to b. Errors that are not *Error
// are reported as not retryable.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAdd, func(w http.ResponseWriter, r *http.Request) {
		var req AddRequest
		if !decode(w, r, &req, req.Validate) {
			return
		}
		reply(w, log, "add", req.Pod, b.Add(r.Context(), &req))
	})
	mux.HandleFunc("POST "+PathCheck, func(w http.ResponseWriter, r *http.Request) {
		var req CheckRequest
		if !decode(w, r, &req, req.Validate) {
			return
		}
		reply(w, log, "check", req.Pod, b.Check(r.Context(), &req))
	})
	mux.HandleFunc("POST "+PathDel, func(w http.ResponseWriter, r *http.Request) {
		var req DelRequest
		if !decode(w, r, &req, req.Validate) {
			return
		}
		reply(w, log, "del", req.Pod, b.Del(r.Context(), &req))
	})
	mux.HandleFunc("GET "+PathReady, func(w http.ResponseWriter, r *http.Request) {
		reply(w, log, "ready", Pod{}, b.Ready())
	})
	return mux
}

// Decode parses a request body into v; for tests and fuzzing of the wire
// format, and used by the handler.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	if dec.More() {
		return errors.New("malformed request: trailing data")
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any, validate func() error) bool {
	err := Decode(r.Body, v)
	if err == nil {
		err = validate()
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, &Error{Message: err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, log *slog.Logger, op string, pod Pod, err error) {
	if err == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	if op != "ready" {
		log.Warn("plugin request failed", "op", op, "pod", pod.String(), "err", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Message: err.Error()}
	} else if e.Message != err.Error() {
		// Keep the context the backend wrapped around the Error.
		e = &Error{Message: err.Error(), Retryable: e.Retryable}
	}
	status := http.StatusInternalServerError
	if e.Retryable {
		status = http.StatusServiceUnavailable
	}
	writeErr(w, status, e)
}

func writeErr(w http.ResponseWriter, status int, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// Listen opens the agent's unix socket at path, replacing a stale socket
// and creating its directory; only root may connect.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	// The umask is process-wide; make sure of the mode whatever raced it.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting %s: %w", path, err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}
