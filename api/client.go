// Package api is the Go client of custos's admin and token HTTP API, used by
// the command line and by tests.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/custos-dev/custos/wire"
)

// Client talks to a running custos.
type Client struct {
	Base  string
	Token string // admin credential
	HTTP  *http.Client
}

// New returns a client for base with the admin credential read from tokenFile
// (may be empty for unauthenticated calls).
func New(base, tokenFile string) (*Client, error) {
	c := &Client{Base: strings.TrimSuffix(base, "/"), HTTP: &http.Client{Timeout: 30 * time.Second}}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read the admin credential: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	return c, nil
}

// Error is an API error answer.
type Error struct {
	Status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// ErrorOf reads the error answer b of status: the wire error body, or, when
// b is not one, the status text and b itself.
func ErrorOf(status int, b []byte) *Error {
	if we, ok := wire.ParseError(b); ok {
		return &Error{Status: status, Code: we.Code, Description: we.Description}
	}
	return &Error{Status: status, Code: http.StatusText(status), Description: strings.TrimSpace(string(b))}
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Description)
}

// Do sends method path with body (JSON-encoded unless nil) and decodes the
// answer into out (unless nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.DoAuth(ctx, method, path, c.Token, body, out)
}

// DoAuth is Do with an explicit bearer credential.
func (c *Client) DoAuth(ctx context.Context, method, path, bearer string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("failed to reach custos at %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return ErrorOf(resp.StatusCode, b)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("failed to decode the answer of %s: %w", path, err)
		}
	}
	return nil
}
