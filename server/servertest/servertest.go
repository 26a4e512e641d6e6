// Package servertest starts a whole custos on loopback for tests: the
// authority and API, and the in-process gateway in front of the sample shop.
package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/token"
)

// Env is a running custos.
type Env struct {
	S                  *server.Server
	API                *api.Client // authenticated with the bootstrap admin credential
	APIURL, GatewayURL string
	Pop                shop.Population
	Cfg                config.Config
	// Upstream counts the requests that reached the shop.
	Upstream atomic.Int64
}

// DefaultPopulation is a small shop with a few missing IDs and decoys.
var DefaultPopulation = shop.Population{Members: 1000, Missing: 200, Decoys: 5, Seed: 1}

// Listen returns a listener on a free loopback port.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Start runs custos over a fresh data dir until the test ends. edit, if not
// nil, changes the configuration first.
func Start(t testing.TB, pop shop.Population, edit func(*config.Config)) *Env {
	t.Helper()
	e := &Env{Pop: pop}
	sh, err := shop.New(pop)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.Upstream.Add(1)
		sh.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	ln, gw := Listen(t), Listen(t)
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	cfg.Issuer = "http://" + ln.Addr().String()
	shop.Configure(&cfg, pop, up.URL)
	if edit != nil {
		edit(&cfg)
	}
	e.Cfg = cfg
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, gw) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	e.S = s
	e.APIURL, e.GatewayURL = "http://"+ln.Addr().String(), "http://"+gw.Addr().String()
	if e.API, err = api.New(e.APIURL, filepath.Join(cfg.Data, server.AdminTokenFile)); err != nil {
		t.Fatal(err)
	}
	return e
}

// Client registers a login client for the default audience and returns its secret.
func (e *Env) Client(t testing.TB) string {
	t.Helper()
	var out struct {
		Secret string `json:"client_secret"`
	}
	if err := e.API.Do(context.Background(), "POST", "/v1/clients", map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &out); err != nil {
		t.Fatal(err)
	}
	return out.Secret
}

// Issue asks the authority for a token for sub.
func (e *Env) Issue(t testing.TB, secret, sub string) string {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := e.API.DoAuth(context.Background(), "POST", "/v1/tokens", secret, map[string]any{"subject": sub, "audience": config.DefaultAudience}, &out); err != nil {
		t.Fatal(err)
	}
	return out.AccessToken
}

// Forge signs a token for sub with the real active key without issuing it:
// what a thief of the key holds.
func (e *Env) Forge(t testing.TB, sub, jti string) string {
	t.Helper()
	k, signer, err := e.S.Keys.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := token.Sign(signer, k.Alg, k.KID, token.Claims{Issuer: e.Cfg.Issuer, Subject: sub, Audience: config.DefaultAudience,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(), JTI: jti, ClientID: "cl_forged"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Member is the i-th real member's ID.
func (e *Env) Member(i uint64) string { return fmt.Sprint(e.Pop.MemberID(i)) }

// Get calls the gateway at base+path with tok and returns the status and,
// for a refusal, its reason. It checks the RFC 6750 challenge of a 401.
func Get(t testing.TB, base, tok, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Desc string `json:"error_description"`
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("401 without RFC 6750 challenge: %q", resp.Header.Get("WWW-Authenticate"))
		}
		json.Unmarshal(b, &body)
	}
	return resp.StatusCode, body.Desc
}

// Get calls the in-process gateway.
func (e *Env) Get(t testing.TB, tok, path string) (int, string) {
	t.Helper()
	return Get(t, e.GatewayURL, tok, path)
}

// WaitListening waits until something accepts connections on addr.
func WaitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
