package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/store"
)

// `custos serve` and a standalone `custos gateway`, both trusting an
// identity provider the shop keeps (Ory Hydra, its key made here): the
// token its hook recorded at the authority passes the standalone gateway,
// which learnt of the record over the ledger stream; a token signed with
// the provider's key but not recorded, or carrying the recorded prv for
// another member, is refused as not_issued.
func TestProviderProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	idp := newHydra(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()

	api, inproc, gw := freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "custos.yaml")
	y := fmt.Sprintf("issuer: http://%s\n", api) + hydraGateway(up.URL, inproc, idp.jwks)
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	call, admin, _, _ := startAuthority(t, bin, data, api, conf)
	var cred struct {
		Token string `json:"token"`
	}
	if st := call("/v1/credentials", admin, map[string]string{"name": "hydra", "role": "issuer", "provider": "shop-hydra"}, &cred); st != 201 {
		t.Fatalf("issuer credential: %d", st)
	}
	startProcess(t, bin, "gateway", "--config", conf, "--upstream", up.URL, "--listen", gw,
		"--authority", "http://"+api, "--data", data)
	waitFor(t, "the standalone gateway", func() bool {
		c, err := net.Dial("tcp", gw)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	var hook struct {
		Session struct {
			AccessToken map[string]any `json:"access_token"`
		} `json:"session"`
	}
	body := map[string]any{
		"session": map[string]any{"id_token": map[string]any{"subject": "1020"}, "extra": map[string]any{}, "client_id": "shop-web"},
		"request": map[string]any{"client_id": "shop-web", "granted_audience": []string{"shop-api"}, "grant_types": []string{"authorization_code"}},
	}
	if st := call("/v1/providers/shop-hydra/hydra/token-hook", cred.Token, body, &hook); st != 200 {
		t.Fatalf("hook: %d", st)
	}
	prv, _ := hook.Session.AccessToken["custos_prv"].(string)
	if prv == "" {
		t.Fatalf("hook answer without custos_prv: %+v", hook)
	}
	sign := func(sub string, ext map[string]any) string { return idp.sign(t, sub, ext) }
	recorded := sign("1020", map[string]any{"custos_prv": prv})
	waitFor(t, "the standalone gateway to allow the recorded token", func() bool {
		st, _ := rawGet(t, gw, "/api/members/1020/profile", recorded)
		return st == 200
	})
	for name, tc := range map[string]struct{ tok, path string }{
		"unrecorded":    {sign("1020", map[string]any{}), "/api/members/1020/profile"},
		"prv_other_sub": {sign("1021", map[string]any{"custos_prv": prv}), "/api/members/1021/profile"},
		"made_up_prv":   {sign("1020", map[string]any{"custos_prv": "prv_AAAAAAAAAAAAAAAAAAAAAA"}), "/api/members/1020/profile"},
	} {
		for _, addr := range []string{gw, inproc} {
			if st, reason := rawGet(t, addr, tc.path, tc.tok); st != 401 || reason != "not_issued" {
				t.Errorf("%s at %s: %d %q, want 401 not_issued", name, addr, st, reason)
			}
		}
	}
	if st, _ := rawGet(t, inproc, "/api/members/1020/profile", recorded); st != 200 {
		t.Errorf("in-process gateway refused the recorded token: %d", st)
	}
}

// Two `custos serve` replicas on one PostgreSQL store and one Redis ledger,
// each with its gateway in-process: a token Hydra's hook recorded at A1 is
// served at A2's gateway, a forgery carrying its prv for another member is
// refused at both, and the issuer credential revoked at A1 is refused at A2.
func TestProviderReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two processes")
	}
	ctx := context.Background()
	pg := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	adminDB, err := store.OpenPostgres(ctx, pg)
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_idp_%d", mrand.Uint32())
	if _, err := adminDB.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		adminDB.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		adminDB.Close()
	})
	rdb := 10 + mrand.IntN(6)
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: rdb})
	defer rc.Close()
	testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(ctx).Err())

	dir := t.TempDir()
	bin := buildCustos(t, dir)
	idp := newHydra(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	type rep struct{ api, gw, data, conf string }
	mk := func(name string) rep {
		r := rep{api: freeAddr(t), gw: freeAddr(t), data: filepath.Join(dir, name), conf: filepath.Join(dir, name+".yaml")}
		y := fmt.Sprintf("issuer: https://custos.test\nscale:\n  store: \"%s&search_path=%s\"\n  redis: \"redis://127.0.0.1:6379/%d\"\n",
			pg, schema, rdb) + hydraGateway(up.URL, r.gw, idp.jwks)
		if err := os.WriteFile(r.conf, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a1, a2 := mk("a1"), mk("a2")
	call1, admin, _, _ := startAuthority(t, bin, a1.data, a1.api, a1.conf)
	call2 := startReplica(t, bin, a2.data, a2.api, a2.conf)
	var cred struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if st := call1("/v1/credentials", admin, map[string]string{"name": "hydra", "role": "issuer", "provider": "shop-hydra"}, &cred); st != 201 {
		t.Fatalf("issuer credential: %d", st)
	}
	var hook struct {
		Session struct {
			AccessToken map[string]any `json:"access_token"`
		} `json:"session"`
	}
	body := map[string]any{
		"session": map[string]any{"id_token": map[string]any{"subject": "1020"}, "client_id": "shop-web"},
		"request": map[string]any{"client_id": "shop-web", "granted_audience": []string{"shop-api"}, "grant_types": []string{"authorization_code"}},
	}
	if st := call1("/v1/providers/shop-hydra/hydra/token-hook", cred.Token, body, &hook); st != 200 {
		t.Fatalf("hook at A1: %d", st)
	}
	prv, _ := hook.Session.AccessToken["custos_prv"].(string)
	sign := func(sub string) string { return idp.sign(t, sub, map[string]any{"custos_prv": prv}) }
	if st, reason := rawGet(t, a2.gw, "/api/members/1020/profile", sign("1020")); st != 200 {
		t.Fatalf("token recorded at A1, at A2's gateway: %d %q", st, reason)
	}
	for _, gw := range []string{a1.gw, a2.gw} {
		if st, reason := rawGet(t, gw, "/api/members/1021/profile", sign("1021")); st != 401 || reason != "not_issued" {
			t.Errorf("prv for another member at %s: %d %q", gw, st, reason)
		}
	}
	// Revoked at A1: A2 refuses the credential within a second.
	if st := call1("/v1/credentials/"+cred.ID+"/revoke", admin, map[string]string{"reason": "hydra host taken"}, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	time.Sleep(time.Second)
	if st := call2("/v1/providers/shop-hydra/hydra/token-hook", cred.Token, body, nil); st != 401 {
		t.Fatalf("revoked issuer credential at A2 after 1 s: %d, want 401", st)
	}
}

// startReplica runs `custos serve` like startAuthority, without registering
// a client (the store is shared with a replica that did).
func startReplica(t *testing.T, bin, data, api, conf string) func(path, bearer string, in, out any) int {
	t.Helper()
	startProcess(t, bin, "serve", "--data", data, "--listen", api, "--config", conf)
	waitFor(t, "the replica", func() bool {
		r, err := http.Get("http://" + api + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return func(path, bearer string, in, out any) int {
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest("POST", "http://"+api+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			_ = json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
}

// hydraIss is the test's Hydra.
const hydraIss = "https://hydra.shop.test/"

// hydra is an Ory Hydra stand-in: an Ed25519 key made in the test,
// published as a JWKS.
type hydra struct {
	key  ed25519.PrivateKey
	jwks string
}

func newHydra(t *testing.T) *hydra {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "hydra-1", Algorithm: "EdDSA", Use: "sig"}}})
	}))
	t.Cleanup(srv.Close)
	return &hydra{key: key, jwks: srv.URL}
}

// sign makes the access token Hydra issues for sub, its extra claims under ext.
func (h *hydra) sign(t *testing.T, sub string, ext map[string]any) string {
	t.Helper()
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: h.key, KeyID: "hydra-1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	now := time.Now()
	raw, err := jwt.Signed(s).Claims(map[string]any{"iss": hydraIss, "sub": sub, "aud": []string{"shop-api"}, "client_id": "shop-web",
		"iat": now.Unix(), "exp": now.Add(9 * time.Minute).Unix(), "jti": "j-" + sub, "ext": ext}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// hydraGateway is the configuration of a gateway with one route in front
// of upstream, trusting the test's Hydra.
func hydraGateway(upstream, listen, jwks string) string {
	return fmt.Sprintf(`gateway:
  upstream: %s
  listen: %s
  routes:
    - pattern: GET /api/members/{memberId}/profile
      data_classes: [name]
      subject_param: memberId
providers:
  - name: shop-hydra
    issuer: %s
    jwks_url: %s
    audience: shop-api
    kind: hydra
    access_token_lifespan: 10m
`, upstream, listen, hydraIss, jwks)
}
