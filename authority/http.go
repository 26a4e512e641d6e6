package authority

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/wire"
)

// bearer returns the bearer credential of r, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// clientOf authenticates the calling client by bearer secret or HTTP Basic
// (client_secret_basic, as introspection callers send it: client_id and
// secret must belong together, both form-urlencoded per RFC 6749 section
// 2.3.1).
func (h *Handler) clientOf(r *http.Request) (*Client, error) {
	if s := bearer(r); s != "" {
		return h.Creds.Client(s)
	}
	if u, pw, ok := r.BasicAuth(); ok {
		id, err1 := url.QueryUnescape(u)
		secret, err2 := url.QueryUnescape(pw)
		if err1 != nil || err2 != nil {
			return nil, ErrBadCredential
		}
		return h.Creds.ClientSecret(r.Context(), id, secret)
	}
	return nil, ErrBadCredential
}

// caller is the address of the client that called the endpoint: the peer,
// or behind Proxies the right-most X-Forwarded-For hop none of them owns.
func (h *Handler) caller(r *http.Request) string {
	if ip := h.Proxies.Source(r.RemoteAddr, r.Header); ip.IsValid() {
		return ip.String()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Handler serves the token endpoints.
type Handler struct {
	Auth  *Authority
	Creds *Credentials
	Log   *slog.Logger
	// Nonces, when set, makes the token endpoint require DPoP server
	// nonces (RFC 9449 section 8) in proofs.
	Nonces *dpop.Nonces
	// Proxies are the networks whose X-Forwarded-For names the caller
	// (config trusted_proxies). Empty: the caller is the peer.
	Proxies clientaddr.Proxies
}

// Register mounts the token endpoints on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/tokens", h.issue)
	mux.HandleFunc("POST "+TokenPath, h.oauthToken)
	mux.HandleFunc("POST /v1/tokens/introspect", h.introspect)
	mux.HandleFunc("POST /v1/tokens/revoke", h.revoke)
}

func (h *Handler) issue(w http.ResponseWriter, r *http.Request) {
	c, err := h.clientOf(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_client"`)
		wire.WriteError(w, http.StatusUnauthorized, "invalid_client", "unknown or revoked client credential")
		return
	}
	var req Request
	if err := wire.Decode(r.Body, &req); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	out, err := h.Auth.Issue(WithCaller(r.Context(), h.caller(r)), c, req)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

func (h *Handler) writeErr(w http.ResponseWriter, err error) {
	var ae *Error
	if errors.As(err, &ae) {
		status := http.StatusBadRequest
		switch ae.Code {
		case "invalid_client":
			status = http.StatusUnauthorized
		case "unauthorized_client", "access_denied":
			status = http.StatusForbidden
		}
		wire.WriteError(w, status, ae.Code, ae.Description)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	if h.Log != nil {
		h.Log.Error("token request failed", "err", err)
	}
	wire.WriteError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the token could not be issued")
}

// tokenParam reads the "token" parameter of an RFC 7662/7009 request
// (application/x-www-form-urlencoded), or {"token": …} as JSON.
func tokenParam(r *http.Request) (string, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	b, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxBody+1))
	if err != nil {
		return "", err
	}
	if len(b) > wire.MaxBody {
		return "", fmt.Errorf("body larger than %d bytes", wire.MaxBody)
	}
	if ct == "application/json" {
		var v struct {
			Token         string `json:"token"`
			TokenTypeHint string `json:"token_type_hint"`
		}
		if err := wire.Unmarshal(b, &v); err != nil {
			return "", err
		}
		if v.Token == "" {
			return "", errors.New("token is required")
		}
		return v.Token, nil
	}
	q, err := url.ParseQuery(string(b))
	if err != nil {
		return "", fmt.Errorf("bad form body: %v", err)
	}
	for k, vs := range q {
		if len(vs) > 1 { // RFC 6749 §3.2: parameters MUST NOT repeat
			return "", fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	t := q.Get("token")
	if t == "" {
		return "", errors.New("token is required")
	}
	return t, nil
}

func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) {
	c, err := h.clientOf(r)
	if err != nil {
		wire.WriteError(w, http.StatusUnauthorized, "invalid_client", "unknown or revoked client credential")
		return
	}
	t, err := tokenParam(r)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	out, err := h.Auth.Introspect(r.Context(), c, t)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	c, err := h.clientOf(r)
	if err != nil {
		wire.WriteError(w, http.StatusUnauthorized, "invalid_client", "unknown or revoked client credential")
		return
	}
	t, err := tokenParam(r)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := h.Auth.Revoke(r.Context(), c, t); err != nil {
		h.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
