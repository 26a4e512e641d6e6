package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	t0     = time.Unix(1_800_000_000, 0)
	b64    = base64.RawURLEncoding
	edKey  = ed25519.NewKeyFromSeed(make([]byte, 32))
	ecKey  = mustEC()
	reqURL = "https://api.shop.example/api/members/m-1/profile"
)

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func expect() Expect {
	return Expect{Method: "GET", URL: reqURL, AccessToken: "the-token", Now: t0}
}

func goodClaims() Claims { return NewClaims("j-1", "GET", reqURL, "the-token", "", t0) }

func sign(t *testing.T, k crypto.Signer, c Claims) string {
	t.Helper()
	p, err := Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// jwkJSON is the public JWK of k as go-jose writes it.
func jwkJSON(t *testing.T, pub crypto.PublicKey) string {
	b, err := json.Marshal(jose.JSONWebKey{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// forge builds a compact JWS from raw header and payload JSON, signed by k
// under alg (EdDSA or ES256 in JWS form), whatever they say.
func forge(t *testing.T, k crypto.Signer, header, payload string) string {
	t.Helper()
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	return in + "." + b64.EncodeToString(rawSig(t, k, in))
}

func rawSig(t *testing.T, k crypto.Signer, in string) []byte {
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, []byte(in))
	case *ecdsa.PrivateKey:
		d := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
	t.Fatalf("key %T", k)
	return nil
}

func payloadJSON(c Claims) string {
	b, _ := json.Marshal(c)
	return string(b)
}

func TestVerifyGood(t *testing.T) {
	for name, k := range map[string]crypto.Signer{"EdDSA": edKey, "ES256": ecKey} {
		t.Run(name, func(t *testing.T) {
			p, err := Verify(sign(t, k, goodClaims()), expect())
			if err != nil {
				t.Fatal(err)
			}
			want, _ := Thumbprint(k.Public())
			if p.JKT != want || p.JTI != "j-1" || !p.IssuedAt.Equal(t0) || string(p.Alg) != name {
				t.Fatalf("proof %+v, want jkt %s", p, want)
			}
		})
	}
}

// RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
func TestThumbprintRFC8037(t *testing.T) {
	x, _ := b64.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	got, err := Thumbprint(ed25519.PublicKey(x))
	if err != nil || got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint %q, %v", got, err)
	}
	// The same key written with members in another order, and with
	// optional members, has the same thumbprint (RFC 7638 section 3).
	pub, err := publicJWK(json.RawMessage(`{"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","crv":"Ed25519","kty":"OKP"}`), "EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	if got2, _ := Thumbprint(pub); got2 != got {
		t.Fatalf("reordered JWK thumbprint %q", got2)
	}
}

func TestVerifyClaims(t *testing.T) {
	now := t0
	cases := []struct {
		name string
		edit func(*Claims)
		exp  func(*Expect)
		ok   bool
	}{
		{"query and fragment ignored", func(c *Claims) { c.HTU = reqURL + "?x=1#f" }, nil, true},
		{"request query ignored", nil, func(e *Expect) { e.URL = reqURL + "?page=2" }, true},
		{"host case", func(c *Claims) { c.HTU = "https://API.Shop.Example/api/members/m-1/profile" }, nil, true},
		{"scheme case", func(c *Claims) { c.HTU = "HTTPS://api.shop.example/api/members/m-1/profile" }, nil, true},
		{"default port", func(c *Claims) { c.HTU = "https://api.shop.example:443/api/members/m-1/profile" }, nil, true},
		{"unreserved percent-encoded", func(c *Claims) { c.HTU = "https://api.shop.example/api/members/m%2D1/profile" }, nil, true},
		{"dot segments", func(c *Claims) { c.HTU = "https://api.shop.example/api/x/../members/./m-1/profile" }, nil, true},
		{"iat at window edge", func(c *Claims) { c.IAT = now.Add(-DefaultWindow).Unix() }, nil, true},
		{"nonce accepted", func(c *Claims) { c.Nonce = "n-1" }, func(e *Expect) { e.Nonce = func(n string) bool { return n == "n-1" } }, true},

		{"htm lower case", func(c *Claims) { c.HTM = "get" }, nil, false},
		{"htm other", func(c *Claims) { c.HTM = "POST" }, nil, false},
		{"htm empty", func(c *Claims) { c.HTM = "" }, nil, false},
		{"htu other host", func(c *Claims) { c.HTU = "https://evil.example/api/members/m-1/profile" }, nil, false},
		{"htu other member", func(c *Claims) { c.HTU = "https://api.shop.example/api/members/m-2/profile" }, nil, false},
		{"htu http", func(c *Claims) { c.HTU = "http://api.shop.example/api/members/m-1/profile" }, nil, false},
		{"htu other port", func(c *Claims) { c.HTU = "https://api.shop.example:8443/api/members/m-1/profile" }, nil, false},
		{"htu trailing slash", func(c *Claims) { c.HTU = reqURL + "/" }, nil, false},
		{"htu path case", func(c *Claims) { c.HTU = "https://api.shop.example/API/members/m-1/profile" }, nil, false},
		{"htu encoded slash", func(c *Claims) { c.HTU = "https://api.shop.example/api/members%2Fm-1/profile" }, nil, false},
		{"htu userinfo", func(c *Claims) { c.HTU = "https://u@api.shop.example/api/members/m-1/profile" }, nil, false},
		{"htu relative", func(c *Claims) { c.HTU = "/api/members/m-1/profile" }, nil, false},
		{"htu bad escape", func(c *Claims) { c.HTU = "https://api.shop.example/api/members/m%G1/profile" }, nil, false},
		{"iat too old", func(c *Claims) { c.IAT = now.Add(-DefaultWindow - time.Second).Unix() }, nil, false},
		{"iat in the future", func(c *Claims) { c.IAT = now.Add(DefaultWindow + time.Second).Unix() }, nil, false},
		{"jti empty", func(c *Claims) { c.JTI = "" }, nil, false},
		{"jti too long", func(c *Claims) { c.JTI = strings.Repeat("j", MaxJTI+1) }, nil, false},
		{"ath missing", func(c *Claims) { c.ATH = "" }, nil, false},
		{"ath of another token", func(c *Claims) { c.ATH = ATH("other") }, nil, false},
		{"ath at the token endpoint", nil, func(e *Expect) { e.AccessToken = "" }, false},
		{"nonce missing", nil, func(e *Expect) { e.Nonce = func(string) bool { return true } }, false},
		{"nonce stale", func(c *Claims) { c.Nonce = "old" }, func(e *Expect) { e.Nonce = func(n string) bool { return n == "n-1" } }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, e := goodClaims(), expect()
			if tc.edit != nil {
				tc.edit(&c)
			}
			if tc.exp != nil {
				tc.exp(&e)
			}
			_, err := Verify(sign(t, edKey, c), e)
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, err %v", tc.ok, err)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestNonceErrorAsksForNonce(t *testing.T) {
	e := expect()
	e.Nonce = func(string) bool { return false }
	_, err := Verify(sign(t, edKey, goodClaims()), e)
	if !errors.Is(err, ErrUseNonce) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	}
	if _, err := Verify("x.y.z", e); errors.Is(err, ErrUseNonce) {
		t.Fatal("a malformed proof asks for a nonce")
	}
}

// The proof's JWS, attacked as token's tests attack the access token's.
func TestVerifyJWSNegative(t *testing.T) {
	edJWK := jwkJSON(t, edKey.Public())
	ecJWK := jwkJSON(t, ecKey.Public())
	pl := payloadJSON(goodClaims())
	hdr := func(alg, jwk string) string { return `{"alg":"` + alg + `","jwk":` + jwk + `,"typ":"dpop+jwt"}` }
	other := ed25519.NewKeyFromSeed([]byte("0123456789abcdef0123456789abcdef"))
	privJWK := func() string {
		b, _ := json.Marshal(jose.JSONWebKey{Key: edKey})
		return string(b)
	}()
	good := forge(t, edKey, hdr("EdDSA", edJWK), pl)
	if _, err := Verify(good, expect()); err != nil {
		t.Fatalf("control proof refused: %v", err)
	}
	goodEC := forge(t, ecKey, hdr("ES256", ecJWK), pl)
	if _, err := Verify(goodEC, expect()); err != nil {
		t.Fatalf("control ES256 proof refused: %v", err)
	}
	parts := strings.Split(good, ".")
	ecParts := strings.Split(goodEC, ".")
	ecSig, _ := b64.DecodeString(ecParts[2])
	n := elliptic.P256().Params().N
	withS := func(s *big.Int) string {
		sig := append([]byte(nil), ecSig...)
		s.FillBytes(sig[32:])
		return ecParts[0] + "." + ecParts[1] + "." + b64.EncodeToString(sig)
	}
	flip := func(s string) string {
		b, _ := b64.DecodeString(s)
		b[len(b)/2] ^= 1
		return b64.EncodeToString(b)
	}
	cases := map[string]string{
		"empty":                   "",
		"two parts":               parts[0] + "." + parts[1],
		"four parts":              good + ".x",
		"alg none":                forge(t, edKey, hdr("none", edJWK), pl),
		"alg none unsigned":       b64.EncodeToString([]byte(hdr("none", edJWK))) + "." + parts[1] + ".",
		"alg HS256":               forge(t, edKey, hdr("HS256", edJWK), pl),
		"alg RS256":               forge(t, edKey, hdr("RS256", edJWK), pl),
		"alg ES512":               forge(t, ecKey, hdr("ES512", ecJWK), pl),
		"alg Ed25519":             forge(t, edKey, hdr("Ed25519", edJWK), pl),
		"alg case":                forge(t, edKey, hdr("eddsa", edJWK), pl),
		"alg missing":             forge(t, edKey, `{"jwk":`+edJWK+`,"typ":"dpop+jwt"}`, pl),
		"alg not a string":        forge(t, edKey, `{"alg":1,"jwk":`+edJWK+`,"typ":"dpop+jwt"}`, pl),
		"alg EdDSA with EC key":   forge(t, ecKey, hdr("EdDSA", ecJWK), pl),
		"alg ES256 with Ed key":   forge(t, edKey, hdr("ES256", edJWK), pl),
		"jwk alg mismatch":        forge(t, edKey, hdr("EdDSA", strings.Replace(edJWK, `{`, `{"alg":"ES256",`, 1)), pl),
		"typ missing":             forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`}`, pl),
		"typ JWT":                 forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`,"typ":"JWT"}`, pl),
		"typ at+jwt":              forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`,"typ":"at+jwt"}`, pl),
		"jwk missing":             forge(t, edKey, `{"alg":"EdDSA","typ":"dpop+jwt"}`, pl),
		"jwk string":              forge(t, edKey, hdr("EdDSA", `"`+strings.ReplaceAll(edJWK, `"`, `'`)+`"`), pl),
		"jwk private":             forge(t, edKey, hdr("EdDSA", privJWK), pl),
		"jwk symmetric":           forge(t, edKey, hdr("EdDSA", `{"kty":"oct","k":"c2VjcmV0"}`), pl),
		"jwk X case twin":         forge(t, edKey, hdr("EdDSA", strings.Replace(edJWK, `{`, `{"X":"AAAA",`, 1)), pl),
		"jwk x5c":                 forge(t, edKey, hdr("EdDSA", strings.Replace(edJWK, `{`, `{"x5c":["MIIB"],`, 1)), pl),
		"jwk off curve":           forge(t, ecKey, hdr("ES256", `{"kty":"EC","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`), pl),
		"jwk P-384":               forge(t, ecKey, hdr("ES256", jwkJSON(t, mustP384()))+"", pl),
		"key swapped":             forge(t, other, hdr("EdDSA", edJWK), pl),
		"kid header":              forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`,"kid":"k1","typ":"dpop+jwt"}`, pl),
		"jku header":              forge(t, edKey, `{"alg":"EdDSA","jku":"https://evil.example/jwks","jwk":`+edJWK+`,"typ":"dpop+jwt"}`, pl),
		"x5c header":              forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`,"typ":"dpop+jwt","x5c":["MIIB"]}`, pl),
		"crit header":             forge(t, edKey, `{"alg":"EdDSA","crit":["b64"],"b64":false,"jwk":`+edJWK+`,"typ":"dpop+jwt"}`, pl),
		"duplicate alg":           forge(t, edKey, `{"alg":"EdDSA","alg":"none","jwk":`+edJWK+`,"typ":"dpop+jwt"}`, pl),
		"case twin typ":           forge(t, edKey, `{"alg":"EdDSA","jwk":`+edJWK+`,"typ":"dpop+jwt","TYP":"at+jwt"}`, pl),
		"duplicate claim":         forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `{`, `{"htu":"https://evil.example/",`, 1)),
		"case twin claim":         forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `{`, `{"HTU":"https://evil.example/",`, 1)),
		"payload not an object":   forge(t, edKey, hdr("EdDSA", edJWK), `[1]`),
		"iat string":              forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `"iat":1800000000`, `"iat":"1800000000"`, 1)),
		"iat missing":             forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `"iat":1800000000,`, ``, 1)),
		"jti number":              forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `"jti":"j-1"`, `"jti":1`, 1)),
		"bad signature":           parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"payload swapped":         parts[0] + "." + b64.EncodeToString([]byte(strings.Replace(pl, "GET", "PUT", 1))) + "." + parts[2],
		"signature empty":         parts[0] + "." + parts[1] + ".",
		"padded header":           parts[0] + "==." + parts[1] + "." + parts[2],
		"header with line break":  parts[0][:10] + "\n" + parts[0][10:] + "." + parts[1] + "." + parts[2],
		"standard base64":         strings.NewReplacer("-", "+", "_", "/").Replace(good),
		"too big":                 forge(t, edKey, hdr("EdDSA", edJWK), strings.Replace(pl, `{`, `{"pad":"`+strings.Repeat("a", MaxSize)+`",`, 1)),
		"ES256 DER signature":     ecParts[0] + "." + ecParts[1] + "." + derSig(t, ecParts[0]+"."+ecParts[1]),
		"ES256 63-byte signature": ecParts[0] + "." + ecParts[1] + "." + b64.EncodeToString(ecSig[1:]),
		"ES256 s = 0":             withS(big.NewInt(0)),
		"ES256 s = n":             withS(n),
		"ES256 s = n+1":           withS(new(big.Int).Add(n, big.NewInt(1))),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := Verify(raw, expect())
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("accepted (%+v) or wrong error: %v", p, err)
			}
			t.Log(err)
		})
	}
}

func mustP384() crypto.PublicKey {
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	return k.Public()
}

func derSig(t *testing.T, in string) string {
	d := sha256.Sum256([]byte(in))
	der, err := ecdsa.SignASN1(rand.Reader, ecKey, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(der)
}

// An ES256 signature is malleable: (r, n-s) verifies too, and clients'
// libraries produce both forms, so both are accepted. The malleated proof
// has the same key and jti, so the replay cache refuses it as the same proof.
func TestHighSIsTheSameProof(t *testing.T) {
	raw := sign(t, ecKey, goodClaims())
	parts := strings.Split(raw, ".")
	sig, _ := b64.DecodeString(parts[2])
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	twin := parts[0] + "." + parts[1] + "." + b64.EncodeToString(sig)
	p1, err1 := Verify(raw, expect())
	p2, err2 := Verify(twin, expect())
	if err1 != nil || err2 != nil {
		t.Fatalf("%v / %v", err1, err2)
	}
	m := NewMemory(10, func() time.Time { return t0 })
	ctx := context.Background()
	if seen, err := m.Seen(ctx, ReplayKey(p1), ReplayUntil(p1, 0)); seen || err != nil {
		t.Fatalf("first: %v %v", seen, err)
	}
	if seen, _ := m.Seen(ctx, ReplayKey(p2), ReplayUntil(p2, 0)); !seen {
		t.Fatal("the malleated twin is not seen as a replay")
	}
}

func TestMemoryReplay(t *testing.T) {
	now := t0
	m := NewMemory(2, func() time.Time { return now })
	ctx := context.Background()
	until := now.Add(time.Minute)
	for _, k := range []string{"a", "b"} {
		if seen, err := m.Seen(ctx, k, until); seen || err != nil {
			t.Fatal(k, seen, err)
		}
	}
	if seen, _ := m.Seen(ctx, "a", until); !seen {
		t.Fatal("a replayed, not seen")
	}
	if _, err := m.Seen(ctx, "c", until); !errors.Is(err, ErrReplayFull) {
		t.Fatalf("full cache: %v, want ErrReplayFull (fail closed)", err)
	}
	now = until
	if seen, err := m.Seen(ctx, "c", now.Add(time.Minute)); seen || err != nil {
		t.Fatalf("after expiry: %v %v", seen, err)
	}
	if m.Len() != 1 {
		t.Fatalf("expired entries not swept: %d", m.Len())
	}
}

func TestNonces(t *testing.T) {
	n := NewNonces([]byte("0123456789abcdef0123456789abcdef"), time.Minute)
	other := NewNonces([]byte("fedcba9876543210fedcba9876543210"), time.Minute)
	now := t0
	v := n.Issue(now)
	if !n.Valid(v, now) || !n.Valid(v, now.Add(time.Minute)) {
		t.Fatal("fresh nonce refused")
	}
	if n.Valid(v, now.Add(2*time.Minute)) {
		t.Fatal("stale nonce accepted")
	}
	if other.Valid(v, now) {
		t.Fatal("nonce of another secret accepted")
	}
	if n.Valid(n.Issue(now.Add(time.Hour)), now) {
		t.Fatal("nonce from the future accepted")
	}
	for _, bad := range []string{"", "x", v + "A", strings.ToUpper(v), v[:len(v)-1]} {
		if n.Valid(bad, now) {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestCanonicalURL(t *testing.T) {
	for in, want := range map[string]string{
		"HTTPS://Example.COM:443":          "https://example.com/",
		"http://example.com:80/a/./b/../c": "http://example.com/a/c",
		"http://example.com:8080/%7euser":  "http://example.com:8080/~user",
		"http://example.com/a%2fb":         "http://example.com/a%2Fb",
		"http://[::1]:80/x?y#z":            "http://[::1]/x",
		"https://example.com/a//b":         "https://example.com/a//b",
	} {
		if got, err := CanonicalURL(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://example.com/", "//example.com/", "https:///x", "https://u:p@example.com/", "mailto:x@example.com", "https://example.com/%zz"} {
		if got, err := CanonicalURL(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}
