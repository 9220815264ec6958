// Command echo is the end-to-end test app of the local cluster.
//
//	echo serve [-listen :8080] [-grpc :9090] [-fail-every N] [-shutdown-delay D]
//	                                 HTTP (and gRPC) server: every request gets a
//	                                 report of who answered (node, pod, addresses);
//	                                 with -fail-every N, every Nth one a 503 instead;
//	                                 with -shutdown-delay, it serves on for D after SIGTERM
//	echo get URL [-n 1] [-H 'Name: value']...
//	                                 HTTP client: GET the URL n times, print bodies
//	echo grpc ADDR [-n 1]            gRPC client: call Echo n times, print reports
//	echo load URL [-mode new|reuse|long] [-rate 20] [-conns 4] [-duration 30s] [-timeout 5s] [-warmup 0]
//	                                 load generator: GET the URL at a steady rate
//	                                 (a new connection per request, keep-alive
//	                                 connections, or connections kept from start
//	                                 to end) and print one JSON line with the
//	                                 counts of ok and failed requests, runs of
//	                                 outcomes and how long-lived connections ended
//
// The server reports NODE_NAME, POD_NAME, POD_NAMESPACE and POD_IP from the
// environment (set them with the downward API). GET /write?path=P&data=D
// writes D to the file P (for hostPath tests) and /read?path=P reads it back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echo serve [-listen :8080] [-grpc :9090] [-fail-every N] | echo get URL [-n N] | echo grpc ADDR [-n N] | echo load URL [-mode new|reuse|long] [-rate R] [-duration D]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "grpc":
		err = grpcCall(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	grpcListen := fs.String("grpc", "", "address for the gRPC Echo service (off when empty)")
	failEvery := fs.Int("fail-every", 0, "answer every Nth report request with 503, a deterministically flaky backend (0: never)")
	shutdownDelay := fs.Duration("shutdown-delay", 0, "on SIGTERM, keep serving this long before closing the listener, while the pod's endpoint is withdrawn (as a preStop sleep)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *failEvery < 0 {
		return fmt.Errorf("-fail-every %d: want 0 (never) or more", *failEvery)
	}
	if *shutdownDelay < 0 {
		return fmt.Errorf("-shutdown-delay %v: want 0 or more", *shutdownDelay)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newMux(log, *failEvery), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		if *shutdownDelay > 0 {
			log.Info("terminating: serving on before closing", "delay", *shutdownDelay)
			time.Sleep(*shutdownDelay)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if *grpcListen != "" {
		gln, err := net.Listen("tcp", *grpcListen)
		if err != nil {
			return fmt.Errorf("grpc listen: %w", err)
		}
		defer serveGRPC(gln, log).GracefulStop()
	}
	log.Info("listening", "addr", ln.Addr().String(), "fail_every", *failEvery)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newMux returns the server's handler. With failEvery > 0, every
// failEvery-th request to the report (not /healthz, so that the pod stays
// ready) is answered 503: a flaky backend whose failures are counted, not
// drawn, so that a demo or test knows exactly how many there were. Every
// report request is logged with its status.
func newMux(log *slog.Logger, failEvery int) *http.ServeMux {
	host, _ := os.Hostname()
	var served atomic.Uint64
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		p, d := r.URL.Query().Get("path"), r.URL.Query().Get("data")
		if err := os.WriteFile(p, []byte(d), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "written\n")
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		if failEvery > 0 && n%uint64(failEvery) == 0 {
			log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", http.StatusServiceUnavailable)
			http.Error(w, "flaky backend: failing this request on purpose (-fail-every)", http.StatusServiceUnavailable)
			return
		}
		log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", http.StatusOK)
		fmt.Fprintf(w, "node=%s\npod=%s\nnamespace=%s\npod_ip=%s\nhostname=%s\nremote=%s\nhost=%s\npath=%s\n",
			os.Getenv("NODE_NAME"), os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"),
			os.Getenv("POD_IP"), host, r.RemoteAddr, r.Host, r.URL.Path)
		// The request's header, one field per line, so that tests can
		// see what proxies on the way added or changed.
		for _, k := range slices.Sorted(maps.Keys(r.Header)) {
			for _, v := range r.Header[k] {
				fmt.Fprintf(w, "header.%s=%s\n", k, v)
			}
		}
	})
	return mux
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of requests")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout")
	include := fs.Bool("include", false, "print each answer's status and headers (status=, response.<Header>=) and go on after a non-200 answer")
	header := http.Header{}
	fs.Var(headerFlag{header}, "H", "a request header field, 'Name: value' (repeatable)")
	// Accept the URL before or after the flags.
	var url string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		url, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if url == "" {
		url = fs.Arg(0)
	}
	if url == "" {
		return errors.New("get: missing URL")
	}
	c := &http.Client{Timeout: *timeout}
	for i := 0; i < *n; i++ {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		maps.Copy(req.Header, header)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if *include {
			writeHead(os.Stdout, resp)
		} else if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
		}
		os.Stdout.Write(b)
	}
	return nil
}

// writeHead prints an answer's status and headers, one per line, sorted.
func writeHead(w io.Writer, resp *http.Response) {
	fmt.Fprintf(w, "status=%d\n", resp.StatusCode)
	for _, k := range slices.Sorted(maps.Keys(resp.Header)) {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(w, "response.%s=%s\n", k, v)
		}
	}
}

// headerFlag collects -H 'Name: value' flags into a request header.
type headerFlag struct{ h http.Header }

func (f headerFlag) String() string { return "" }

func (f headerFlag) Set(s string) error {
	name, value, err := parseHeaderField(s)
	if err != nil {
		return err
	}
	f.h.Add(name, value)
	return nil
}

// parseHeaderField splits "Name: value" as curl's -H takes it. The name
// must be a token, so that a typo is an error and not a malformed request.
func parseHeaderField(s string) (name, value string, err error) {
	name, value, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.IndexFunc(name, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
		return "", "", fmt.Errorf("header %q: want 'Name: value' with a token for a name", s)
	}
	value = strings.Trim(value, " \t")
	if strings.ContainsAny(value, "\r\n\x00") {
		return "", "", fmt.Errorf("header %q: the value has a line break or NUL", s)
	}
	return name, value, nil
}

// isTokenChar reports whether r may appear in a field name (RFC 9110 tchar).
func isTokenChar(r rune) bool {
	return r < 0x7f && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}
