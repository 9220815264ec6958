package proxy

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
)

// websocketAccept is the Sec-WebSocket-Accept for key (RFC 6455 4.2.2).
func websocketAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// websocketEcho completes an RFC 6455 handshake, says hello first, then
// echoes what it reads in upper case until the client half-closes, and
// then says goodbye and closes.
func websocketEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Version") != "13" {
		http.Error(w, "not a websocket handshake", http.StatusBadRequest)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + websocketAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\nhello\n")
	brw.Flush()
	buf := make([]byte, 4096)
	for {
		n, err := brw.Read(buf)
		if n > 0 {
			c.Write([]byte(strings.ToUpper(string(buf[:n]))))
		}
		if err != nil {
			break
		}
	}
	io.WriteString(c, "goodbye\n")
}

// A WebSocket upgrade passes through the waypoint: the handshake, bytes
// both ways (the server's first), and the client's half-close.
func TestWebSocket(t *testing.T) {
	m, eps := oneService(t, nil, meshOptions{}, "127.77.24.1:8080")
	eps[0].handle(websocketEcho)
	c, err := m.tunnel(t.Context(), echoVIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != websocketAccept(key) {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
		t.Errorf("101 without its Upgrade and Connection fields: %v", resp.Header)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("server's first bytes %q, %v", line, err)
	}
	for _, msg := range []string{"ping\n", strings.Repeat("a", 3000) + "\n"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != strings.ToUpper(msg) {
			t.Fatalf("echo %q, want %q", got, strings.ToUpper(msg))
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "goodbye\n" {
		t.Errorf("after half-close: %q, %v; want the server's goodbye and EOF", rest, err)
	}
}

// An h2c upgrade is never carried: the backend gets a plain HTTP/1.1
// request without Upgrade and HTTP2-Settings, and the client an HTTP/1.1
// answer, not 101.
func TestH2CUpgradeNotTunnelled(t *testing.T) {
	m, eps := oneService(t, nil, meshOptions{}, "127.77.24.2:8080")
	seen := make(chan *http.Request, 1)
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		io.WriteString(w, "plain")
	})
	for _, connection := range []string{"Upgrade, HTTP2-Settings", "HTTP2-Settings, upgrade", "keep-alive, Upgrade, HTTP2-Settings"} {
		t.Run(connection, func(t *testing.T) {
			c, err := m.tunnel(t.Context(), echoVIP+":80")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /h2c HTTP/1.1\r\nHost: echo\r\nConnection: "+connection+"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.ProtoMajor != 1 || string(body) != "plain" {
				t.Fatalf("answer %s %d %q, want HTTP/1.1 200 from the backend", resp.Proto, resp.StatusCode, body)
			}
			if resp.Header.Get("Upgrade") != "" {
				t.Errorf("the answer carries Upgrade: %v", resp.Header)
			}
			r := <-seen
			if r.ProtoMajor != 1 {
				t.Errorf("backend saw %s", r.Proto)
			}
			for _, f := range []string{"Upgrade", "Http2-Settings"} {
				if v, ok := r.Header[f]; ok {
					t.Errorf("backend saw %s: %q", f, v)
				}
			}
			for _, v := range r.Header["Connection"] {
				if strings.Contains(strings.ToLower(v), "upgrade") || strings.Contains(strings.ToLower(v), "http2-settings") {
					t.Errorf("backend saw Connection: %q", v)
				}
			}
		})
	}
}
