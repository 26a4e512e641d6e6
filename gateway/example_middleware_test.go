package gateway_test

import (
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

// The gateway as net/http middleware in front of the shop's own handler: a
// token the authority issued reads its own member's profile; another
// member's profile, and a validly signed token the ledger never saw, are
// refused before the handler runs.
func ExampleGateway_Middleware() {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	led := issued{}
	g, err := gateway.New(gateway.Config{
		Issuer: "https://custos.example", Audience: gateway.Audiences{"shop-api"},
		Routes: []gateway.Route{{Pattern: "GET /api/members/{member}/profile", SubjectParam: "member"}},
	}, oneKey{keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}, led, nil, nil)
	if err != nil {
		panic(err)
	}
	defer g.Close()
	shop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "profile of %s", r.Header.Get("X-Custos-Subject"))
	})
	h := g.Middleware(shop)

	now := time.Now().Unix()
	sign := func(jti string) string {
		tok, _ := token.Sign(priv, keys.EdDSA, "k1", token.Claims{Issuer: "https://custos.example", Subject: "1020",
			Audience: "shop-api", IssuedAt: now, NotBefore: now, ExpiresAt: now + 300, JTI: jti, ClientID: "login"})
		return tok
	}
	issuedTok, minted := sign("j1"), sign("j2")
	led[ledger.HashToken(issuedTok)] = ledger.Live // what the authority records when it issues

	for _, c := range []struct{ tok, path string }{
		{issuedTok, "/api/members/1020/profile"},
		{issuedTok, "/api/members/1021/profile"},
		{minted, "/api/members/1020/profile"},
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		r.Header.Set("Authorization", "Bearer "+c.tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusOK {
			fmt.Println(c.path, w.Code, w.Body.String())
		} else {
			fmt.Println(c.path, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	// Output:
	// /api/members/1020/profile 200 profile of 1020
	// /api/members/1021/profile 401 Bearer error="invalid_token", error_description="subject_mismatch"
	// /api/members/1020/profile 401 Bearer error="invalid_token", error_description="not_issued"
}
