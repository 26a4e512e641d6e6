package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

type oneKey struct{ k keys.Key }

func (o oneKey) Lookup(kid string) (keys.Key, bool) { return o.k, kid == o.k.KID }

type issued map[ledger.Hash]ledger.Status

func (m issued) Status(_ context.Context, h ledger.Hash) (ledger.Status, error) { return m[h], nil }

// The decision API answers a forward-auth call from nginx: the original
// method and URI in X-Original-Method and X-Original-URI, the client's
// Authorization as it came.
func ExampleGateway_DecisionHandler() {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	led := issued{}
	g, _ := gateway.New(gateway.Config{
		Issuer: "https://custos.example", Audience: gateway.Audiences{"shop-api"},
		Routes: []gateway.Route{{Pattern: "GET /api/members/{member}/profile", SubjectParam: "member"}},
	}, oneKey{keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}, led, nil, nil)
	defer g.Close()
	now := time.Now().Unix()
	tok, _ := token.Sign(priv, keys.EdDSA, "k1", token.Claims{Issuer: "https://custos.example", Subject: "1020",
		Audience: "shop-api", IssuedAt: now, NotBefore: now, ExpiresAt: now + 300, JTI: "j1", ClientID: "login"})
	led[ledger.HashToken(tok)] = ledger.Live // what the authority records when it issues

	for _, uri := range []string{"/api/members/1020/profile", "/api/members/1021/profile", "/api/members/1021/../1020/profile"} {
		r := httptest.NewRequest("GET", "/v1/decide", nil)
		r.Header.Set("X-Original-Method", "GET")
		r.Header.Set("X-Original-URI", uri)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		g.DecisionHandler().ServeHTTP(w, r)
		if w.Code == http.StatusOK {
			fmt.Println(uri, w.Code, "subject", w.Header().Get("X-Custos-Subject"))
		} else {
			fmt.Println(uri, w.Code, w.Header().Get("X-Custos-Reason"))
		}
	}
	// Output:
	// /api/members/1020/profile 200 subject 1020
	// /api/members/1021/profile 401 subject_mismatch
	// /api/members/1021/../1020/profile 401 unknown_route
}
