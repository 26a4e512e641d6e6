package server_test

import (
	"crypto/ed25519"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/dpop"
)

// A provider's token served from the gateway's verified-token cache
// verifies no signature, yet the gateway's own checks still run on it as
// on custos's tokens: the subject binding of the route, the DPoP proof
// of a key-bound token, and a block on the source.
func TestProviderTokenWarmKeepsGatewayChecks(t *testing.T) {
	e, idp := startWithProviders(t)
	cred := addIssuer(t, e, "auth0", "shop-auth0")
	m1, m2 := e.Member(1), e.Member(2)
	exp := time.Now().Add(10 * time.Minute).Unix()
	record := func(cnf string) string {
		t.Helper()
		_, ans := raw(t, e, "POST", "/v1/ledger/prv", "Bearer "+cred, nil)
		prv, _ := ans["prv"].(string)
		body := fixture(t, "auth0-action-record.json", map[string]string{"ISS": auth0Iss, "PRV": prv, "SUB": m1,
			"CLIENT": "9ZjHk2qPq1", "EXP": strconv.FormatInt(exp, 10)})
		if st, ans := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, body); st != 201 {
			t.Fatalf("record: %d %v", st, ans)
		}
		c := map[string]any{"iss": auth0Iss, "sub": m1, "aud": []string{"shop-api"}, "azp": "9ZjHk2qPq1",
			"iat": time.Now().Unix(), "exp": exp, "custos_prv": prv}
		if cnf != "" {
			c["cnf"] = map[string]any{"jkt": cnf}
		}
		return idp.sign(t, c)
	}
	sigs := func() uint64 { n, _ := e.S.Gateway.SignatureChecks(); return n }
	path := "/api/members/" + m1 + "/profile"

	tok := record("")
	if st, reason := e.Get(t, tok, path); st != 200 {
		t.Fatalf("first request: %d %q", st, reason)
	}
	warm := sigs()
	if st, reason := e.Get(t, tok, path); st != 200 {
		t.Fatalf("warm request: %d %q", st, reason)
	}
	if n := sigs(); n != warm {
		t.Fatalf("the warm request verified %d token signatures", n-warm)
	}
	if st, reason := e.Get(t, tok, "/api/members/"+m2+"/profile"); st != 401 || reason != "subject_mismatch" {
		t.Fatalf("warm token on another member's path: %d %q, want subject_mismatch", st, reason)
	}
	e.S.Gateway.Block(netip.MustParsePrefix("127.0.0.1/32"), time.Now().Add(time.Minute), "test")
	seen := e.Upstream.Load()
	if st, _ := e.Get(t, tok, path); st == 200 || e.Upstream.Load() != seen {
		t.Fatalf("warm token from a blocked source: %d", st)
	}
	e.S.Gateway.Unblock(netip.MustParsePrefix("127.0.0.1/32"))

	// Bound to a DPoP key: served with a fresh proof of it, warm or not.
	client := ed25519.NewKeyFromSeed([]byte("server-prov-dpop-client-key-0123"))
	thief := ed25519.NewKeyFromSeed([]byte("server-prov-dpop-thief-key-01234"))
	jkt, _ := dpop.Thumbprint(client.Public())
	bound := record(jkt)
	n := 0
	get := func(scheme string, k ed25519.PrivateKey) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.GatewayURL+path, nil)
		req.Header.Set("Authorization", scheme+" "+bound)
		if k != nil {
			n++
			p, err := dpop.Sign(k, dpop.NewClaims("prov-"+strconv.Itoa(n), "GET", e.GatewayURL+path, bound, "", time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("DPoP", p)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	for i := range 2 {
		if st, ch := get("DPoP", client); st != 200 {
			t.Fatalf("bound token with its proof, request %d: %d %s", i, st, ch)
		}
	}
	warm = sigs()
	for name, tc := range map[string]struct {
		scheme string
		key    ed25519.PrivateKey
	}{"bearer": {"Bearer", nil}, "no_proof": {"DPoP", nil}, "thief": {"DPoP", thief}} {
		if st, ch := get(tc.scheme, tc.key); st != 401 || !strings.HasPrefix(ch, "DPoP ") {
			t.Errorf("warm bound token, %s: %d %q, want 401 with a DPoP challenge", name, st, ch)
		}
	}
	if st, _ := get("DPoP", client); st != 200 {
		t.Fatalf("bound token with its proof after the refusals: %d", st)
	}
	if n := sigs(); n != warm {
		t.Fatalf("warm requests verified %d token signatures", n-warm)
	}
}
