package benchpeer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// TLSFiles are PEM files for one side of a mutual-TLS peer.
type TLSFiles struct {
	Cert string // leaf first, then intermediates
	Key  string
	CA   string // roots the other side must chain to
}

// Stunnel is a pair of stunnel processes doing mutual TLS 1.3 between them:
// plaintext in at ClientAddr, TLS between the two, plaintext out to the
// target. It is the peer the HBONE benchmark compares against.
type Stunnel struct {
	ClientAddr string
	procs      []*exec.Cmd
}

// StartStunnel starts the pair in dir, forwarding to target. The processes
// stop when Close is called or ctx ends.
func StartStunnel(ctx context.Context, dir string, client, server TLSFiles, target string) (*Stunnel, error) {
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		if bin, err = exec.LookPath("stunnel"); err != nil {
			return nil, errors.New("stunnel not found: install Debian's stunnel4 (make bench does)")
		}
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	inPort, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	s := &Stunnel{ClientAddr: fmt.Sprintf("127.0.0.1:%d", inPort)}

	// Both sides: TLS 1.3 only, peer certificate required and verified
	// against the CA, as HBONE does.
	common := func(name string, f TLSFiles) string {
		return strings.Join([]string{
			"foreground = yes",
			"pid =",
			"debug = 3",
			"output = " + filepath.Join(dir, name+".log"),
			"[" + name + "]",
			"cert = " + f.Cert,
			"key = " + f.Key,
			"CAfile = " + f.CA,
			"verifyChain = yes",
			"requireCert = yes",
			"sslVersionMin = TLSv1.3",
		}, "\n") + "\n"
	}
	serverConf := common("server", server) + "accept = " + tlsAddr + "\nconnect = " + target + "\n"
	clientConf := common("client", client) + "client = yes\naccept = " + s.ClientAddr + "\nconnect = " + tlsAddr + "\n"
	for _, c := range []struct{ name, conf, addr string }{
		{"server", serverConf, tlsAddr},
		{"client", clientConf, s.ClientAddr},
	} {
		path := filepath.Join(dir, "stunnel-"+c.name+".conf")
		if err := os.WriteFile(path, []byte(c.conf), 0o600); err != nil {
			s.Close()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, bin, path)
		if err := cmd.Start(); err != nil {
			s.Close()
			return nil, fmt.Errorf("start stunnel %s: %w", c.name, err)
		}
		s.procs = append(s.procs, cmd)
		if err := waitListening(ctx, c.addr); err != nil {
			s.Close()
			log, _ := os.ReadFile(filepath.Join(dir, c.name+".log"))
			return nil, fmt.Errorf("stunnel %s did not listen on %s: %w\n%s", c.name, c.addr, err, log)
		}
	}
	return s, nil
}

// PIDs are the process IDs of the two stunnel processes.
func (s *Stunnel) PIDs() []int {
	var pids []int
	for _, p := range s.procs {
		pids = append(pids, p.Process.Pid)
	}
	return pids
}

// Close stops both processes and waits for them.
func (s *Stunnel) Close() {
	for _, p := range s.procs {
		p.Process.Kill()
		p.Wait()
	}
	s.procs = nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening polls until addr accepts a TCP connection: a child process
// gives no other signal that it is ready.
func waitListening(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
