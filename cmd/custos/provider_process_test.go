package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
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
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "hydra-1", Algorithm: "EdDSA", Use: "sig"}}})
	}))
	defer jwks.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()

	const iss = "https://hydra.shop.test/"
	api, inproc, gw := freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "custos.yaml")
	y := fmt.Sprintf(`issuer: http://%s
gateway:
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
`, api, up.URL, inproc, iss, jwks.URL)
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
	sign := func(sub string, ext map[string]any) string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: "hydra-1"}}, (&jose.SignerOptions{}).WithType("JWT"))
		now := time.Now()
		raw, err := jwt.Signed(s).Claims(map[string]any{"iss": iss, "sub": sub, "aud": []string{"shop-api"}, "client_id": "shop-web",
			"iat": now.Unix(), "exp": now.Add(9 * time.Minute).Unix(), "jti": "j-" + sub, "ext": ext}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
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
