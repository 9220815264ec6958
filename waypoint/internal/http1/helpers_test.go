package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// served is a server under test: Serve running on one end of a loopback
// connection, the other end for the test to play the client.
type served struct {
	client net.Conn
	br     *bufio.Reader
	result chan error
}

// serve runs Serve with cfg (Handler must be set) and returns the
// client's side.
func serve(t testing.TB, cfg ServerConfig) *served {
	t.Helper()
	c, s := tcpPair(t)
	return serveOn(t, c, s, cfg)
}

func serveOn(t testing.TB, c, s net.Conn, cfg ServerConfig) *served {
	t.Helper()
	sv := &served{client: c, br: bufio.NewReader(c), result: make(chan error, 1)}
	go func() { sv.result <- Serve(context.Background(), s, cfg) }()
	t.Cleanup(func() {
		c.Close()
		<-sv.result
	})
	return sv
}

func (sv *served) send(t testing.TB, raw string) {
	t.Helper()
	if _, err := io.WriteString(sv.client, raw); err != nil {
		t.Fatalf("writing request: %v", err)
	}
}

// response reads one response; the request method matters for framing.
func (sv *served) response(t testing.TB, method string) *http.Response {
	t.Helper()
	sv.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(sv.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return resp
}

// body reads a response's whole body.
func body(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return string(b)
}

// expectClosed checks that the server closed the connection: the next
// read ends without data. It then closes the client's end.
func (sv *served) expectClosed(t testing.TB) {
	t.Helper()
	sv.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := sv.br.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection not closed: read %d bytes, %v", n, err)
	}
	// Let a lingering close end.
	sv.client.Close()
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// serveResult waits for Serve's result.
func (sv *served) serveResult(t testing.TB) error {
	t.Helper()
	select {
	case err := <-sv.result:
		sv.result <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// recorder is a handler that records what it is called with.
type recorder struct {
	seen chan *seenRequest
	// then answers; nil writes "ok".
	then func(w http.ResponseWriter, r *http.Request, body []byte, err error)
}

type seenRequest struct {
	req     *http.Request
	body    []byte
	bodyErr error
	trailer http.Header
}

func newRecorder() *recorder { return &recorder{seen: make(chan *seenRequest, 16)} }

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	rec.seen <- &seenRequest{req: r, body: b, bodyErr: err, trailer: r.Trailer.Clone()}
	if rec.then != nil {
		rec.then(w, r, b, err)
		return
	}
	if err != nil {
		return
	}
	io.WriteString(w, "ok")
}

func (rec *recorder) next(t testing.TB) *seenRequest {
	t.Helper()
	select {
	case s := <-rec.seen:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
		return nil
	}
}

// none checks that the handler saw nothing more.
func (rec *recorder) none(t testing.TB) {
	t.Helper()
	select {
	case s := <-rec.seen:
		t.Fatalf("handler called with %s %s", s.req.Method, s.req.RequestURI)
	default:
	}
}
