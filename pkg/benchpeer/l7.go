package benchpeer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// L7Proxy describes one run of an HTTP reverse proxy (HAProxy or nginx)
// the way the waypoint benchmark compares them: one worker, one thread,
// keep-alive and connection reuse to the origin, no access log.
type L7Proxy struct {
	// Dir holds the configuration, logs and temporary files.
	Dir string
	// CPUs pins the proxy (a taskset CPU list); empty leaves it unpinned.
	CPUs string
	// H1Listen takes HTTP/1.1. H2Listen takes HTTP/2: with prior
	// knowledge in plaintext, by ALPN with TLS.
	H1Listen, H2Listen string
	// H1Origin receives requests as HTTP/1.1, H2Origin as HTTP/2 (prior
	// knowledge in plaintext, ALPN with TLS). nginx cannot speak HTTP/2
	// to an upstream: it sends everything to H1Origin.
	H1Origin, H2Origin string
	// TLS, when set, puts TLS 1.3 on both legs: the proxy presents it to
	// clients and speaks TLS to the origin, without verifying it.
	TLS *ServerCert
}

func (c L7Proxy) check() error {
	switch {
	case c.Dir == "":
		return errors.New("benchpeer: L7Proxy.Dir is required")
	case c.H1Listen == "" || c.H2Listen == "":
		return errors.New("benchpeer: L7Proxy needs H1Listen and H2Listen")
	case c.H1Origin == "" || c.H2Origin == "":
		return errors.New("benchpeer: L7Proxy needs H1Origin and H2Origin")
	}
	return nil
}

// haproxyConfig is HAProxy's configuration for c: one thread, HTTP mode,
// connections to the origin reused across client connections.
func haproxyConfig(c L7Proxy) string {
	var b strings.Builder
	b.WriteString(`global
  nbthread 1
  maxconn 4000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode http
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
`)
	bind := func(addr, alpn string) string {
		if c.TLS == nil {
			if alpn == "h2" {
				return addr + " proto h2"
			}
			return addr
		}
		return fmt.Sprintf("%s ssl crt %s alpn %s", addr, c.TLS.Combined, alpn)
	}
	server := func(addr, alpn string) string {
		if c.TLS == nil {
			if alpn == "h2" {
				return addr + " proto h2"
			}
			return addr
		}
		return fmt.Sprintf("%s ssl verify none alpn %s", addr, alpn)
	}
	for _, s := range []struct{ name, listen, origin, alpn string }{
		{"h1", c.H1Listen, c.H1Origin, "http/1.1"},
		{"h2", c.H2Listen, c.H2Origin, "h2"},
	} {
		fmt.Fprintf(&b, "frontend in-%s\n  bind %s\n  default_backend out-%s\n", s.name, bind(s.listen, s.alpn), s.name)
		fmt.Fprintf(&b, "backend out-%s\n  server origin %s\n", s.name, server(s.origin, s.alpn))
	}
	return b.String()
}

// StartHAProxy writes c's configuration and starts HAProxy in the
// foreground; it returns once both listeners accept connections.
func StartHAProxy(ctx context.Context, c L7Proxy) (*Proc, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, errors.New("haproxy not found: install Debian's haproxy (make bench-waypoint does)")
	}
	cfg := filepath.Join(c.Dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(c)), 0o600); err != nil {
		return nil, err
	}
	return startLogged(ctx, "haproxy", c.Dir, Command(ctx, c.CPUs, bin, "-db", "-f", cfg), c.H1Listen, c.H2Listen)
}

// nginxMain is the part of an nginx configuration every use shares: one
// process in the foreground, files under dir, no access log, connections
// kept for as many requests as a benchmark sends. Without a master the
// one process is the worker: its CPU and memory are nginx's whole cost,
// and it cannot be left running by a master that was killed.
func nginxMain(dir string) string {
	tmp := filepath.Join(dir, "tmp")
	return fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams 512;
  ssl_protocols TLSv1.3;
`, dir, tmp)
}

// nginxProxyConfig is nginx's configuration as a reverse proxy for c.
func nginxProxyConfig(c L7Proxy) string {
	var b strings.Builder
	b.WriteString(nginxMain(c.Dir))
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
	}
	fmt.Fprintf(&b, "  upstream origin {\n    server %s;\n    keepalive 1024;\n    keepalive_requests 100000000;\n    keepalive_timeout 300s;\n  }\n", c.H1Origin)
	for _, s := range []struct{ listen, opts string }{{c.H1Listen, ""}, {c.H2Listen, " http2"}} {
		tls := ""
		if c.TLS != nil {
			s.opts = " ssl" + s.opts
			tls = fmt.Sprintf("    ssl_certificate %s;\n    ssl_certificate_key %s;\n", c.TLS.Cert, c.TLS.Key)
		}
		fmt.Fprintf(&b, "  server {\n    listen %s%s;\n%s", s.listen, s.opts, tls)
		fmt.Fprintf(&b, "    location / {\n      proxy_pass %s://origin;\n", scheme)
		// Keep-alive to the origin needs HTTP/1.1 and no "Connection:
		// close"; a large response streams through memory buffers
		// instead of a temporary file.
		b.WriteString("      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_max_temp_file_size 0;\n")
		if c.TLS != nil {
			b.WriteString("      proxy_ssl_session_reuse on;\n      proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_verify off;\n")
		}
		b.WriteString("    }\n  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// StartNginxProxy writes c's configuration and starts nginx (one
// process); it returns once both listeners accept connections.
func StartNginxProxy(ctx context.Context, c L7Proxy) (*Proc, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return startNginx(ctx, c.Dir, c.CPUs, nginxProxyConfig(c), c.H1Listen, c.H2Listen)
}

// Origin is an nginx web server serving files: the backend every path
// of the waypoint benchmark ends at.
type Origin struct {
	// Dir holds the configuration, logs and the files served (Dir/www).
	Dir  string
	CPUs string
	// H1Listen serves HTTP/1.1, H2Listen HTTP/2 with prior knowledge, and
	// TLSListen either behind TLS 1.3 (chosen by ALPN) with TLS's
	// certificate. Empty addresses are not served.
	H1Listen, H2Listen, TLSListen string
	TLS                           *ServerCert
	// Files maps names ("1k") to sizes: each is served at "/<name>",
	// zero bytes (a sparse file, so a large one costs no disk).
	Files map[string]int64
}

func originConfig(o Origin) string {
	var b strings.Builder
	b.WriteString(nginxMain(o.Dir))
	b.WriteString("  sendfile on;\n  tcp_nopush on;\n")
	root := fmt.Sprintf("    root %s;\n  }\n", filepath.Join(o.Dir, "www"))
	if o.H1Listen != "" || o.TLSListen != "" {
		b.WriteString("  server {\n")
		if o.H1Listen != "" {
			fmt.Fprintf(&b, "    listen %s;\n", o.H1Listen)
		}
		if o.TLSListen != "" {
			fmt.Fprintf(&b, "    listen %s ssl http2;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n", o.TLSListen, o.TLS.Cert, o.TLS.Key)
		}
		b.WriteString(root)
	}
	if o.H2Listen != "" {
		// Plaintext HTTP/2 without sendfile: with it, nginx answered a
		// 1 KiB request at 1,000 req/s with a p50 of 3-5 ms and a p99
		// of 11 ms, against 0.7 and 1.4 ms without.
		fmt.Fprintf(&b, "  server {\n    listen %s http2;\n    sendfile off;\n", o.H2Listen)
		b.WriteString(root)
	}
	b.WriteString("}\n")
	return b.String()
}

// StartNginxOrigin creates o's files and starts nginx serving them; it
// returns once every listener accepts connections.
func StartNginxOrigin(ctx context.Context, o Origin) (*Proc, error) {
	switch {
	case o.Dir == "":
		return nil, errors.New("benchpeer: Origin.Dir is required")
	case o.TLSListen != "" && o.TLS == nil:
		return nil, errors.New("benchpeer: Origin.TLSListen needs Origin.TLS")
	}
	www := filepath.Join(o.Dir, "www")
	if err := os.MkdirAll(www, 0o700); err != nil {
		return nil, err
	}
	for name, size := range o.Files {
		if name == "" || strings.ContainsAny(name, `/\`) || name[0] == '.' {
			return nil, fmt.Errorf("benchpeer: origin file name %q: want a plain name", name)
		}
		f, err := os.Create(filepath.Join(www, name))
		if err != nil {
			return nil, err
		}
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("benchpeer: origin file %s: %w", name, err)
		}
	}
	var addrs []string
	for _, a := range []string{o.H1Listen, o.H2Listen, o.TLSListen} {
		if a != "" {
			addrs = append(addrs, a)
		}
	}
	return startNginx(ctx, o.Dir, o.CPUs, originConfig(o), addrs...)
}

func startNginx(ctx context.Context, dir, cpus, conf string, addrs ...string) (*Proc, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errors.New("nginx not found: install Debian's nginx-light (make bench-waypoint does)")
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return startLogged(ctx, "nginx", dir, Command(ctx, cpus, bin, "-p", dir, "-c", path), addrs...)
}

// startLogged starts cmd with its output in dir/<name>.log and waits for
// addrs to accept connections; on failure the error carries the log.
func startLogged(ctx context.Context, name, dir string, cmd *exec.Cmd, addrs ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = log, log
	p, err := StartProc(name, cmd)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if err := p.WaitListening(ctx, a); err != nil {
			p.Close()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%w\n%s", err, out)
		}
	}
	return p, nil
}
