package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/token"
)

// The metadata lists exactly what works, under both well-known names, and a
// client that follows it gets a token the gateway accepts.
func TestOAuthMetadataAndTokenEndpoint(t *testing.T) {
	e := servertest.Start(t, servertest.DefaultPopulation, nil)
	ctx := context.Background()
	var docs []map[string]any
	for _, p := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, err := http.Get(e.APIURL + p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", p, resp.StatusCode, err)
		}
		resp.Body.Close()
		docs = append(docs, m)
	}
	m := docs[0]
	b0, _ := json.Marshal(docs[0])
	b1, _ := json.Marshal(docs[1])
	if string(b0) != string(b1) {
		t.Errorf("the two documents differ:\n%s\n%s", b0, b1)
	}
	var names []string
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	want := []string{"dpop_signing_alg_values_supported", "grant_types_supported", "introspection_endpoint", "introspection_endpoint_auth_methods_supported", "issuer", "jwks_uri",
		"response_types_supported", "revocation_endpoint", "revocation_endpoint_auth_methods_supported", "token_endpoint",
		"token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported"}
	if !slices.Equal(names, want) {
		t.Errorf("members %v, want %v (nothing about ID tokens or authorization endpoints)", names, want)
	}
	if m["issuer"] != e.Cfg.Issuer || m["token_endpoint"] != e.APIURL+"/oauth2/token" || m["jwks_uri"] != e.APIURL+"/.well-known/jwks.json" {
		t.Errorf("issuer or endpoints: %v", m)
	}
	if algs, _ := json.Marshal(m["dpop_signing_alg_values_supported"]); string(algs) != `["EdDSA","ES256"]` {
		t.Errorf("DPoP algorithms %s", algs)
	}
	if rt, _ := m["response_types_supported"].([]any); len(rt) != 0 {
		t.Errorf("response types %v: custos has no authorization endpoint", rt)
	}
	// Every endpoint listed answers on this server.
	for _, k := range []string{"jwks_uri", "token_endpoint", "introspection_endpoint", "revocation_endpoint"} {
		method := "POST"
		if k == "jwks_uri" {
			method = "GET"
		}
		req, _ := http.NewRequest(method, m[k].(string), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 404 || resp.StatusCode == 405 {
			t.Errorf("%s %s: %d", k, m[k], resp.StatusCode)
		}
	}
	// Each advertised client_secret method works with the client library.
	c, secret, err := e.S.Creds.AddClient(ctx, "svc", []string{"shop-api"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, style := range []int{1, 2} { // AuthStyleInParams, AuthStyleInHeader
		cc := clientcredentials.Config{ClientID: c.ID, ClientSecret: secret, TokenURL: m["token_endpoint"].(string)}
		cc.AuthStyle = oauth2.AuthStyle(style)
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatalf("style %d: %v", style, err)
		}
		p, err := token.Parse(tok.AccessToken)
		if err != nil || p.Claims.Issuer != m["issuer"] || p.Claims.Subject != c.ID {
			t.Fatalf("token %+v %v", p, err)
		}
		// The verdict the gateway applies finds it good (introspection).
		req, _ := http.NewRequest("POST", m["introspection_endpoint"].(string), strings.NewReader("token="+tok.AccessToken))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(c.ID, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var in map[string]any
		json.NewDecoder(resp.Body).Decode(&in)
		resp.Body.Close()
		if in["active"] != true || in["sub"] != c.ID {
			t.Errorf("introspection of the token: %d %v", resp.StatusCode, in)
		}
	}
}

// keys.alg RS256: the sealed keyring makes an RSA key, the token endpoint
// signs RS256 with it, the JWK set publishes it, and the verdict accepts it.
func TestRS256Keys(t *testing.T) {
	e := servertest.Start(t, servertest.DefaultPopulation, func(c *config.Config) { c.Keys.Alg = "RS256" })
	ctx := context.Background()
	c, secret, err := e.S.Creds.AddClient(ctx, "svc", []string{"shop-api"}, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := (&clientcredentials.Config{ClientID: c.ID, ClientSecret: secret, TokenURL: e.APIURL + "/oauth2/token"}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := token.Parse(tok.AccessToken)
	if err != nil || p.Header.Alg != "RS256" || len(p.Signature) != 256 {
		t.Fatalf("token header %+v, %d-byte signature, %v", p.Header, len(p.Signature), err)
	}
	resp, err := http.Get(e.APIURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if len(set.Keys) == 0 || set.Keys[0]["kty"] != "RSA" || set.Keys[0]["alg"] != "RS256" || set.Keys[0]["kid"] != p.Header.KID {
		t.Fatalf("JWK set %v", set.Keys)
	}
	if set.Keys[0]["d"] != nil || set.Keys[0]["p"] != nil {
		t.Fatal("the JWK set publishes private RSA members")
	}
	req, _ := http.NewRequest("POST", e.APIURL+"/v1/tokens/introspect", strings.NewReader("token="+tok.AccessToken))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.ID, secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var in map[string]any
	json.NewDecoder(resp.Body).Decode(&in)
	resp.Body.Close()
	if in["active"] != true {
		t.Fatalf("introspection of an RS256 token: %v", in)
	}
}
