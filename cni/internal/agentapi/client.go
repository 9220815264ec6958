package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Client talks to the node agent.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{
		socket: socket,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		}},
	}
}

// Add enrols a pod; it returns once the agent has installed the redirect
// rules and ztunnel has acknowledged the pod.
func (c *Client) Add(ctx context.Context, req *AddRequest) error {
	return c.post(ctx, PathAdd, req)
}

// Check verifies a pod is enrolled.
func (c *Client) Check(ctx context.Context, req *CheckRequest) error {
	return c.post(ctx, PathCheck, req)
}

// Del tells the agent a pod's sandbox is going away.
func (c *Client) Del(ctx context.Context, req *DelRequest) error {
	return c.post(ctx, PathDel, req)
}

// Ready reports whether the agent can enrol pods now (ztunnel connected).
func (c *Client) Ready(ctx context.Context) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+PathReady, nil)
	if err != nil {
		return err
	}
	return c.do(r)
}

func (c *Client) post(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	return c.do(r)
}

func (c *Client) do(r *http.Request) error {
	resp, err := c.hc.Do(r)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w at %s: %v", ErrAgentUnavailable, c.socket, op.Err)
		}
		return fmt.Errorf("calling skiff node agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading skiff node agent's answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e Error
	if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
		return &Error{Message: fmt.Sprintf("skiff node agent answered %s", resp.Status), Retryable: resp.StatusCode >= 500}
	}
	return &e
}
