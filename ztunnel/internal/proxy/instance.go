package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/ztunnel/internal/socket"
)

// PodInfo identifies the pod an in-pod Instance serves, as the node agent
// described it.
type PodInfo struct {
	UID, Name, Namespace, ServiceAccount string
	// ID is the pod's workload identity.
	ID spiffeid.ID
}

// InstanceConfig configures one set of listeners.
type InstanceConfig struct {
	// Name appears in logs (the pod's namespace/name, or "shared").
	Name string
	// Namespace is where sockets are created; nil is ztunnel's own.
	Namespace *socket.Namespace
	// Pod is set in in-pod mode: the Instance serves this pod only. In
	// shared mode (nil) workloads are found by address.
	Pod *PodInfo
	// Listen addresses; an empty one disables that listener.
	Outbound, Plaintext, HBONE, SOCKS5 string
	// Mark is set on every socket (inpod.SocketMark in pods).
	Mark uint32
	// ReusePort lets a replacement ztunnel bind the same ports.
	ReusePort bool
	// Transparent makes the inbound listeners accept TPROXY'd connections
	// and connects to the application from the client's address.
	Transparent bool
}

// Instance serves one pod, or the node in shared mode.
type Instance struct {
	p      *Proxy
	cfg    InstanceConfig
	ns     *socket.Namespace
	log    *slog.Logger
	ctx    context.Context // ends every connection of the instance
	cancel context.CancelCauseFunc

	dialer   hbone.Dialer
	closers  []func() error // HBONE clients
	hboneSrv *hbone.Server
	// quicCfg configures the QUIC server, made at the first datagram.
	quicCfg hbone.ServerConfig

	listeners  []net.Listener
	stopAccept []func() // remove the listeners from the acceptor
	wg         sync.WaitGroup

	mu    sync.Mutex
	conns map[*tracked]struct{}
	// quicIdle is the HBONE UDP socket while it waits for its first
	// datagram (awaitQUIC), and stopAwait ends that wait; quicSrv serves
	// it from then on.
	quicIdle  *net.UDPConn
	stopAwait func()
	quicSrv   *hbone.QUICServer
	idle      chan struct{} // closed when conns becomes empty, while draining
	draining  bool
	closed    bool
}

// tracked is an open connection. Killing it closes its sockets, which
// ends the copy; it is lighter than a context per connection.
type tracked struct {
	inbound bool
	pc      policy.Conn

	mu     sync.Mutex
	dstUID string // set once the destination is known; read by reevaluate
	conns  [2]net.Conn
	n      int
	cause  error
	killed bool
}

// attach adds a socket to close on kill; if already killed it closes c
// and returns false.
func (t *tracked) attach(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.killed {
		c.Close()
		return false
	}
	t.conns[t.n] = c
	t.n++
	return true
}

// kill closes the connection's sockets, recording why.
func (t *tracked) kill(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.killed {
		return
	}
	t.killed, t.cause = true, cause
	for _, c := range t.conns[:t.n] {
		c.Close()
	}
}

func (t *tracked) setDestination(uid string) {
	t.mu.Lock()
	t.dstUID = uid
	t.mu.Unlock()
}

func (t *tracked) destination() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dstUID
}

// err is the cause of a kill, nil otherwise.
func (t *tracked) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cause
}

var errInstanceClosed = errors.New("closed: workload removed or ztunnel stopped")

// Start opens the listeners of cfg (all or none) and serves them.
func (p *Proxy) Start(cfg InstanceConfig) (*Instance, error) {
	if cfg.Name == "" {
		cfg.Name = "shared"
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	i := &Instance{
		p:      p,
		cfg:    cfg,
		ns:     cfg.Namespace,
		log:    p.log.With("proxy", cfg.Name),
		ctx:    ctx,
		cancel: cancel,
		conns:  map[*tracked]struct{}{},
	}
	if err := i.open(); err != nil {
		i.Close()
		return nil, err
	}
	p.mu.Lock()
	p.instances[i] = struct{}{}
	p.mu.Unlock()
	return i, nil
}

func (i *Instance) open() error {
	mark := socket.Options{Mark: i.cfg.Mark}
	clientCfg := hbone.ClientConfig{
		Bundles:     i.p.cfg.Bundles,
		DialContext: i.ns.DialContext(mark),
		// The QUIC client's socket lives in the pod's namespace and
		// carries ztunnel's mark, like its TCP dials.
		ListenPacket: func() (net.PacketConn, error) {
			return i.ns.ListenPacket(context.Background(), ":0", mark)
		},
		Logger:       i.log,
		PingInterval: i.p.cfg.PingInterval,
		PingTimeout:  i.p.cfg.PingTimeout,
	}
	d, err := hbone.NewTransportDialer(clientCfg, hbone.TransportConfig{Mode: i.p.cfg.Transport})
	if err != nil {
		return fmt.Errorf("HBONE client: %w", err)
	}
	i.closers = append(i.closers, d.Close)
	i.dialer = d

	lo := socket.Options{Mark: i.cfg.Mark, ReusePort: i.cfg.ReusePort}
	in := lo
	in.Transparent = i.cfg.Transparent
	ctx := context.Background()
	// The Proxy's acceptor waits on every listener with one goroutine.
	listen := func(addr string, o socket.Options, serve func(*net.TCPConn)) error {
		if addr == "" {
			return nil
		}
		ln, err := i.ns.Listen(ctx, addr, o)
		if err != nil {
			return err
		}
		i.listeners = append(i.listeners, ln)
		remove, err := i.p.acceptor.Add(ln, serve)
		if err != nil {
			return err
		}
		i.stopAccept = append(i.stopAccept, remove)
		return nil
	}
	if err := listen(i.cfg.Outbound, lo, i.handleRedirected); err != nil {
		return err
	}
	if err := listen(i.cfg.Plaintext, in, i.handlePlaintext); err != nil {
		return err
	}
	if err := listen(i.cfg.SOCKS5, lo, i.handleSOCKS5); err != nil {
		return err
	}
	if i.cfg.HBONE != "" {
		quic := i.p.cfg.Transport.ServesQUIC()
		srvCfg := hbone.ServerConfig{
			TrustDomain:    i.p.cfg.TrustDomain,
			Bundles:        i.p.cfg.Bundles,
			GetCertificate: i.serverCertificate,
			Handler:        hbone.HandlerFunc(i.serveHBONE),
			QUICResetKey:   i.p.cfg.QUICResetKey,
			Logger:         i.log,
			PingInterval:   i.p.cfg.PingInterval,
			PingTimeout:    i.p.cfg.PingTimeout,
		}
		var udp *net.UDPConn
		if quic {
			if udp, err = i.listenQUIC(ctx, lo); err != nil {
				return err
			}
			port := uint16(0)
			if udp != nil {
				port = uint16(udp.LocalAddr().(*net.UDPAddr).Port)
			} else if ap, err := netip.ParseAddrPort(i.cfg.HBONE); err == nil {
				port = ap.Port()
			}
			srvCfg.AltSvc = hbone.FormatAltSvc(port, altSvcMaxAge)
		}
		if i.hboneSrv, err = hbone.NewServer(srvCfg); err != nil {
			if udp != nil {
				udp.Close()
			}
			return err
		}
		srv := i.hboneSrv
		if err := listen(i.cfg.HBONE, in, func(c *net.TCPConn) { srv.ServeConn(c) }); err != nil {
			if udp != nil {
				udp.Close()
			}
			return err
		}
		if quic {
			i.quicCfg = srvCfg
			if udp == nil {
				i.wg.Add(1)
				go func() {
					defer i.wg.Done()
					i.rebindQUIC(ctx, lo)
				}()
			} else if err := i.awaitQUIC(udp); err != nil {
				return err
			}
		}
	}
	return nil
}

// listenQUIC binds HBONE's UDP port. Unlike the TCP listeners it does
// not share the port (SO_REUSEPORT) with a ztunnel being replaced: the
// kernel would spread the packets of the old ztunnel's QUIC connections
// over both sockets, and the new one cannot serve them. While the old
// one holds the port, it returns nil, and rebindQUIC binds it once free;
// meanwhile peers that try QUIC fall back to TCP.
func (i *Instance) listenQUIC(ctx context.Context, o socket.Options) (*net.UDPConn, error) {
	o.ReusePort = false
	udp, err := i.ns.ListenPacket(ctx, i.cfg.HBONE, o)
	if err != nil && i.cfg.ReusePort && errors.Is(err, syscall.EADDRINUSE) {
		i.log.Info("HBONE UDP port held by the ztunnel being replaced; QUIC waits for it", "addr", i.cfg.HBONE)
		return nil, nil
	}
	return udp, err
}

// quicRebind is how often a port held by the replaced ztunnel is tried.
const quicRebind = 250 * time.Millisecond

// rebindQUIC binds HBONE's UDP port once the replaced ztunnel let it go,
// and then awaits QUIC on it, unless the instance closed first.
func (i *Instance) rebindQUIC(ctx context.Context, o socket.Options) {
	o.ReusePort = false
	t := time.NewTicker(quicRebind)
	defer t.Stop()
	var udp *net.UDPConn
	for udp == nil {
		select {
		case <-i.ctx.Done():
			return
		case <-t.C:
		}
		var err error
		udp, err = i.ns.ListenPacket(ctx, i.cfg.HBONE, o)
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			i.log.Error("HBONE QUIC listener failed", "err", err)
			return
		}
	}
	i.log.Info("HBONE UDP port bound; QUIC is served from its first datagram", "addr", udp.LocalAddr().String())
	if err := i.awaitQUIC(udp); err != nil {
		i.log.Error("HBONE QUIC listener failed", "err", err)
	}
}

// awaitQUIC serves HBONE over QUIC on udp from its first datagram on.
// Until then the socket is only an entry in the acceptor's epoll set:
// QUIC's reader and server cost about 140 KB a pod, a goroutine waiting
// for the datagram a few more, and most pods never receive QUIC.
func (i *Instance) awaitQUIC(udp *net.UDPConn) error {
	rc, err := udp.SyscallConn()
	if err != nil {
		udp.Close()
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		udp.Close()
		return nil
	}
	// Under the lock, so that Close sees stopAwait if it sees quicIdle.
	i.quicIdle = udp
	i.stopAwait, err = i.p.acceptor.AwaitReadable(rc, func() { i.serveQUIC(udp) })
	if err != nil {
		i.quicIdle = nil
		udp.Close()
	}
	return err
}

// serveQUIC serves HBONE over QUIC on udp, which has a datagram queued,
// until the instance closes; a draining instance takes no new QUIC.
func (i *Instance) serveQUIC(udp *net.UDPConn) {
	i.mu.Lock()
	if i.closed || i.draining || i.quicIdle != udp {
		i.mu.Unlock()
		return // Close closes udp
	}
	srv, err := hbone.NewQUICServer(i.quicCfg)
	if err != nil {
		i.mu.Unlock()
		i.log.Error("HBONE QUIC server", "err", err)
		return
	}
	i.quicIdle, i.quicSrv = nil, srv
	i.wg.Add(1)
	i.mu.Unlock()
	defer i.wg.Done()
	// Serve closes udp when the server closes, even if it already has.
	if err := srv.Serve(udp); err != nil && !errors.Is(err, hbone.ErrServerClosed) {
		i.log.Error("HBONE QUIC listener failed", "err", err)
	}
}

// altSvcMaxAge is how long a peer may count on ztunnel's QUIC listener
// after an answer advertised it; every answer renews it.
const altSvcMaxAge = time.Hour

// Addrs returns the listeners' addresses, in the order outbound,
// plaintext, SOCKS5, HBONE (those configured).
func (i *Instance) Addrs() []net.Addr {
	out := make([]net.Addr, len(i.listeners))
	for n, ln := range i.listeners {
		out[n] = ln.Addr()
	}
	return out
}

// serverCertificate answers HBONE handshakes as the destination workload:
// the pod in in-pod mode, else the local workload at the address dialled.
func (i *Instance) serverCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	id := spiffeid.ID{}
	if i.cfg.Pod != nil {
		id = i.cfg.Pod.ID
	} else {
		local := socket.AddrPort(hello.Conn.LocalAddr())
		w := i.p.cfg.Store.Snapshot().WorkloadByIP(local.Addr())
		if !i.p.local(w) {
			return nil, fmt.Errorf("no local workload at %v", local.Addr())
		}
		id = w.Identity()
	}
	c, err := i.p.cfg.Certs.Get(hello.Context(), id)
	if err != nil {
		return nil, err
	}
	return &c.TLS, nil
}

func (i *Instance) track(t *tracked) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return false
	}
	i.conns[t] = struct{}{}
	return true
}

func (i *Instance) untrack(t *tracked) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.conns, t)
	if len(i.conns) == 0 && i.idle != nil {
		close(i.idle)
		i.idle = nil
	}
}

func (i *Instance) trackedConns() []*tracked {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]*tracked, 0, len(i.conns))
	for t := range i.conns {
		out = append(out, t)
	}
	return out
}

// isOwnPort reports whether dst is one of ztunnel's ports on a pod, which
// must never be proxied to (a loop).
func isOwnPort(dst netip.AddrPort) bool {
	switch dst.Port() {
	case inpod.OutboundPort, inpod.InboundPlaintextPort, inpod.InboundHBONEPort:
		return true
	}
	return false
}

func (i *Instance) stopAccepting() {
	// Out of the acceptor before closing: a closed descriptor's number
	// may be reused.
	for _, remove := range i.stopAccept {
		remove()
	}
	for _, ln := range i.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting, tells HBONE peers to go away, waits for open
// connections to finish or ctx to end, and then closes everything.
func (i *Instance) Shutdown(ctx context.Context) error {
	i.stopAccepting()
	if i.hboneSrv != nil {
		go i.hboneSrv.Shutdown(ctx)
	}
	i.mu.Lock()
	i.draining = true
	if i.quicSrv != nil {
		go i.quicSrv.Shutdown(ctx)
	}
	var idle chan struct{}
	if len(i.conns) > 0 {
		if i.idle == nil {
			i.idle = make(chan struct{})
		}
		idle = i.idle
	}
	i.mu.Unlock()
	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
			i.log.Info("drain deadline reached; closing connections", "open", len(i.trackedConns()))
		}
	}
	i.Close()
	return err
}

// Close closes the listeners and every connection at once.
func (i *Instance) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	idle, stopAwait, quicSrv := i.quicIdle, i.stopAwait, i.quicSrv
	i.mu.Unlock()
	if stopAwait != nil {
		stopAwait() // out of the epoll set before its descriptor closes
	}
	if idle != nil {
		idle.Close()
	}
	i.stopAccepting()
	if i.hboneSrv != nil {
		i.hboneSrv.Close()
	}
	if quicSrv != nil {
		quicSrv.Close()
	}
	i.cancel(errInstanceClosed)
	for _, t := range i.trackedConns() {
		t.kill(errInstanceClosed)
	}
	for _, c := range i.closers {
		c()
	}
	i.wg.Wait()
	i.p.mu.Lock()
	delete(i.p.instances, i)
	i.p.mu.Unlock()
	return nil
}
