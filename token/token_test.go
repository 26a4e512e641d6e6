package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/keys"
)

var b64 = base64.RawURLEncoding

func testClaims() Claims {
	return Claims{
		Issuer: "https://custos.test", Subject: "member-1", Audience: "shop-api",
		ExpiresAt: 2000000900, IssuedAt: 2000000000, NotBefore: 2000000000,
		JTI: "0123456789abcdef0123456789abcdef", Scope: "profile", SessionID: "s1", ClientID: "login",
	}
}

// craft signs arbitrary header and payload JSON with an Ed25519 key, the way
// an attacker holding (or not holding) a key would.
func craft(priv ed25519.PrivateKey, header, payload string) string {
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	return in + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

func TestSignParseVerify(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		s    crypto.Signer
		alg  keys.Alg
	}{
		{"ok/eddsa", edPriv, keys.EdDSA},
		{"ok/es256", ecPriv, keys.ES256},
		{"ok/rs256", testRSAKey(t), keys.RS256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testClaims()
			raw, err := Sign(tc.s, tc.alg, "kid-1", c)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if h := p.Header; h.Alg != string(tc.alg) || h.KID != "kid-1" || h.Typ != Type || h.Crit != nil {
				t.Errorf("header %+v", p.Header)
			}
			if p.Claims != c {
				t.Errorf("claims %+v, want %+v", p.Claims, c)
			}
			if tc.alg == keys.ES256 && len(p.Signature) != 64 {
				t.Errorf("ES256 signature is %d bytes, want 64 (r||s)", len(p.Signature))
			}
			if err := VerifySignature(p, tc.alg, tc.s.Public()); err != nil {
				t.Fatalf("verify: %v", err)
			}
			// The same token under the other algorithm name must fail.
			other := keys.ES256
			if tc.alg == keys.ES256 {
				other = keys.EdDSA
			}
			if err := VerifySignature(p, other, tc.s.Public()); !errors.Is(err, ErrBadSignature) {
				t.Errorf("verify under %s: %v", other, err)
			}
		})
	}
}

var rsaKeyOnce struct {
	sync.Once
	k *rsa.PrivateKey
}

// testRSAKey is one 2048-bit key for the whole run (generating is slow).
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaKeyOnce.Do(func() { rsaKeyOnce.k, _ = rsa.GenerateKey(rand.Reader, 2048) })
	return rsaKeyOnce.k
}

// RS256: only RSA keys of 2048 bits or more sign and verify, signatures of
// exactly the modulus size, and the key type must fit the algorithm.
func TestRS256(t *testing.T) {
	k := testRSAKey(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := Sign(small, keys.RS256, "k", testClaims()); err == nil {
		t.Error("fail/sign-1024-bit: signed")
	}
	if _, err := Sign(ed, keys.RS256, "k", testClaims()); err == nil {
		t.Error("fail/sign-ed25519-as-rs256: signed")
	}
	if _, err := Sign(k, keys.ES256, "k", testClaims()); err == nil {
		t.Error("fail/sign-rsa-as-es256: signed")
	}
	raw, err := Sign(k, keys.RS256, "k", testClaims())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(p, keys.RS256, &k.PublicKey); err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func() error{
		"fail/small-key": func() error {
			sp, _ := Parse(mustSign(t, small, raw))
			return VerifySignature(sp, keys.RS256, &small.PublicKey)
		},
		"fail/ed25519-key": func() error { return VerifySignature(p, keys.RS256, ed.Public()) },
		"fail/truncated": func() error {
			q := *p
			q.Signature = p.Signature[1:]
			return VerifySignature(&q, keys.RS256, &k.PublicKey)
		},
		"fail/leading-zero": func() error {
			q := *p
			q.Signature = append([]byte{0}, p.Signature...)
			return VerifySignature(&q, keys.RS256, &k.PublicKey)
		},
		"fail/flipped": func() error {
			q := *p
			q.Signature = append([]byte(nil), p.Signature...)
			q.Signature[10] ^= 1
			return VerifySignature(&q, keys.RS256, &k.PublicKey)
		},
		"fail/as-ps256-key-of-other-alg": func() error { return VerifySignature(p, keys.Alg("PS256"), &k.PublicKey) },
	} {
		if err := fn(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The public key round-trips through the JWK set as RS256.
	b, err := MarshalJWKS([]keys.Key{{KID: "r1", Alg: keys.RS256, Public: &k.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ParseJWKS(b)
	if err != nil || len(ks) != 1 || ks[0].Alg != keys.RS256 || !k.PublicKey.Equal(ks[0].Public) {
		t.Fatalf("JWKS round trip: %v %+v", err, ks)
	}
	sb, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &small.PublicKey, KeyID: "s"}}})
	if _, err := ParseJWKS(sb); !errors.Is(err, ErrKeySet) {
		t.Errorf("fail/jwks-1024-bit: %v", err)
	}
}

// mustSign signs raw's signing input with k, PKCS #1 v1.5, bypassing Sign's
// key-size check.
func mustSign(t *testing.T, k *rsa.PrivateKey, raw string) string {
	in := raw[:strings.LastIndexByte(raw, '.')]
	d := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64.EncodeToString(sig)
}

func TestSignRefuses(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	c := testClaims()
	c.JTI = ""
	if _, err := Sign(edPriv, keys.EdDSA, "k", c); !errors.Is(err, ErrClaims) {
		t.Errorf("fail/missing-jti: %v", err)
	}
	if _, err := Sign(edPriv, keys.ES256, "k", testClaims()); err == nil {
		t.Error("fail/alg-key-mismatch: signed")
	}
	if _, err := Sign(edPriv, "HS256", "k", testClaims()); err == nil {
		t.Error("fail/hs256: signed")
	}
}

func TestParseStrict(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := priv.Public()
	good := `{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`
	claims, _ := json.Marshal(testClaims())
	goodTok := craft(priv, good, string(claims))
	h, p, s := splitT(goodTok)

	big := map[string]any{}
	_ = json.Unmarshal(claims, &big)
	big["pad"] = strings.Repeat("x", 9<<10)
	bigClaims, _ := json.Marshal(big)

	for _, tc := range []struct {
		name  string
		tok   string
		parse bool // Parse succeeds
		sig   bool // and the signature verifies
	}{
		{"ok/plain", goodTok, true, true},
		{"ok/typ-media-type", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"application/AT+JWT"}`, string(claims)), true, true},
		{"ok/embedded-jwk-ignored", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jwk":{"kty":"OKP"},"jku":"https://evil.test/k","x5u":"https://evil.test/c","x5c":["AAAA"]}`, string(claims)), true, true},
		{"fail/empty", "", false, false},
		{"fail/two-parts", h + "." + p, false, false},
		{"fail/four-parts", goodTok + ".x", false, false},
		{"fail/9KiB", craft(priv, good, string(bigClaims)), false, false},
		{"fail/padded-signature", goodTok + "==", false, false},
		{"fail/padded-header", h + "=." + p + "." + s, false, false},
		{"fail/std-alphabet", h + "." + p + "." + strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+/", false, false},
		{"fail/newline-in-payload", h + "." + p[:10] + "\n" + p[10:] + "." + s, false, false},
		{"fail/nonzero-trailing-bits", h + "." + p + "." + flipLastBits(s), false, false},
		{"fail/space", h + ". " + p + "." + s, false, false},
		{"fail/header-not-json", craft(priv, `{"alg":"EdDSA"`, string(claims)), false, false},
		{"fail/header-array", craft(priv, `["alg"]`, string(claims)), false, false},
		{"fail/header-trailing", craft(priv, good+`{}`, string(claims)), false, false},
		{"fail/dup-alg", craft(priv, `{"alg":"none","alg":"EdDSA","kid":"k1","typ":"at+jwt"}`, string(claims)), false, false},
		{"fail/dup-nested", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x":{"a":1,"a":2}}`, string(claims)), false, false},
		{"fail/dup-claim-sub", craft(priv, good, `{"sub":"victim",`+string(claims[1:])), false, false},
		{"fail/dup-in-array", craft(priv, good, `{"x":[{"a":1,"a":1}],`+string(claims[1:])), false, false},
		{"fail/crit", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["exp"],"exp":1}`, string(claims)), false, false},
		{"fail/crit-empty", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":[]}`, string(claims)), false, false},
		{"fail/no-alg", craft(priv, `{"kid":"k1","typ":"at+jwt"}`, string(claims)), false, false},
		{"fail/alg-not-string", craft(priv, `{"alg":1,"kid":"k1","typ":"at+jwt"}`, string(claims)), false, false},
		{"fail/typ-jwt", craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"JWT"}`, string(claims)), false, false},
		{"fail/typ-missing", craft(priv, `{"alg":"EdDSA","kid":"k1"}`, string(claims)), false, false},
		{"fail/claims-missing-exp", craft(priv, good, `{"iss":"i","sub":"s","aud":"a","iat":1,"jti":"j","client_id":"c"}`), false, false},
		{"fail/aud-array", craft(priv, good, `{"iss":"i","sub":"s","aud":["a"],"exp":2,"iat":1,"jti":"j","client_id":"c"}`), false, false},
		{"fail/exp-float", craft(priv, good, `{"iss":"i","sub":"s","aud":"a","exp":2.5,"iat":1,"jti":"j","client_id":"c"}`), false, false},
		{"fail/invalid-utf8", craft(priv, good, "{\"iss\":\"i\xff\",\"sub\":\"s\",\"aud\":\"a\",\"exp\":2,\"iat\":1,\"jti\":\"j\",\"client_id\":\"c\"}"), false, false},
		{"fail/deep-nesting", craft(priv, good, `{"x":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`,`+string(claims[1:])), false, false},
		{"fail/edited-payload", h + "." + b64.EncodeToString([]byte(strings.Replace(string(claims), "member-1", "member-2", 1))) + "." + s, true, false},
		{"fail/empty-signature", h + "." + p + ".", true, false},
		{"fail/alg-none", craft(priv, `{"alg":"none","kid":"k1","typ":"at+jwt"}`, string(claims)), true, false},
		{"ok/cnf-jkt", craft(priv, good, `{"cnf":{"jkt":"`+testJKT+`"},`+string(claims[1:])), true, true},
		{"fail/cnf-not-object", craft(priv, good, `{"cnf":"`+testJKT+`",`+string(claims[1:])), false, false},
		{"fail/cnf-empty", craft(priv, good, `{"cnf":{},`+string(claims[1:])), false, false},
		{"fail/cnf-other-method", craft(priv, good, `{"cnf":{"x5t#S256":"`+testJKT+`"},`+string(claims[1:])), false, false},
		{"fail/cnf-jkt-and-jwk", craft(priv, good, `{"cnf":{"jkt":"`+testJKT+`","jwk":{"kty":"OKP"}},`+string(claims[1:])), false, false},
		{"fail/cnf-dup-jkt", craft(priv, good, `{"cnf":{"jkt":"`+testJKT+`","jkt":"`+testJKT+`"},`+string(claims[1:])), false, false},
		{"fail/cnf-jkt-short", craft(priv, good, `{"cnf":{"jkt":"`+testJKT[:42]+`"},`+string(claims[1:])), false, false},
		{"fail/cnf-jkt-padded", craft(priv, good, `{"cnf":{"jkt":"`+testJKT[:42]+`="},`+string(claims[1:])), false, false},
		{"fail/cnf-jkt-std-alphabet", craft(priv, good, `{"cnf":{"jkt":"`+testJKT[:41]+`+/"},`+string(claims[1:])), false, false},
		{"fail/cnf-jkt-number", craft(priv, good, `{"cnf":{"jkt":1},`+string(claims[1:])), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := Parse(tc.tok)
			if tc.parse != (err == nil) {
				t.Fatalf("Parse: err=%v, want success=%v", err, tc.parse)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
				}
				return
			}
			err = VerifySignature(pt, keys.EdDSA, pub)
			if tc.sig != (err == nil) {
				t.Fatalf("VerifySignature: err=%v, want success=%v", err, tc.sig)
			}
			if err != nil && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifySignature error %v does not wrap ErrBadSignature", err)
			}
		})
	}
}

// testJKT is an RFC 7638 thumbprint (the RFC's example key).
const testJKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

func TestSignCnfRoundTrip(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c := testClaims()
	c.Cnf.JKT = testJKT
	raw, err := Sign(priv, keys.EdDSA, "k1", c)
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _ := splitT(raw)
	pb, _ := b64.DecodeString(payload)
	if !bytes.Contains(pb, []byte(`"cnf":{"jkt":"`+testJKT+`"}`)) {
		t.Errorf("payload %s lacks cnf.jkt", pb)
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if p.Claims != c {
		t.Errorf("claims %+v, want %+v", p.Claims, c)
	}
	// A bearer token carries no cnf member at all.
	raw, _ = Sign(priv, keys.EdDSA, "k1", testClaims())
	_, payload, _ = splitT(raw)
	pb, _ = b64.DecodeString(payload)
	if bytes.Contains(pb, []byte(`cnf`)) {
		t.Errorf("bearer payload %s has cnf", pb)
	}
	c.Cnf.JKT = "short"
	if _, err := Sign(priv, keys.EdDSA, "k1", c); !errors.Is(err, ErrClaims) {
		t.Errorf("fail/short-jkt: %v", err)
	}
}

func splitT(tok string) (string, string, string) {
	parts := strings.Split(tok, ".")
	return parts[0], parts[1], parts[2]
}

// flipLastBits changes the unused low bits of the last base64url character,
// which a lenient decoder ignores.
func flipLastBits(s string) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alpha, s[len(s)-1])
	return s[:len(s)-1] + string(alpha[i^1])
}

func TestVerifyAlgConfusion(t *testing.T) {
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims, _ := json.Marshal(testClaims())

	// HS256 keyed with the public key bytes: the classic confusion attack.
	in := b64.EncodeToString([]byte(`{"alg":"HS256","kid":"k1","typ":"at+jwt"}`)) + "." + b64.EncodeToString(claims)
	m := hmac.New(sha256.New, edPub)
	m.Write([]byte(in))
	hs := in + "." + b64.EncodeToString(m.Sum(nil))

	// ES256 with an ASN.1 DER signature instead of r||s.
	es, _ := Sign(ecPriv, keys.ES256, "k1", testClaims())
	esP, _ := Parse(es)
	d := sha256.Sum256(esP.SigningInput)
	der, _ := ecdsa.SignASN1(rand.Reader, ecPriv, d[:])
	esDER := string(esP.SigningInput) + "." + b64.EncodeToString(der)

	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edTok, _ := Sign(edPriv, keys.EdDSA, "k1", testClaims())

	for _, tc := range []struct {
		name string
		tok  string
		alg  keys.Alg
		pub  crypto.PublicKey
	}{
		{"fail/hs256-with-public-key", hs, keys.EdDSA, edPub},
		{"fail/hs256-declared-hs256", hs, "HS256", edPub},
		{"fail/es256-der", esDER, keys.ES256, ecPriv.Public()},
		{"fail/es256-header-ed-key", es, keys.ES256, edPub},
		{"fail/wrong-key", edTok, keys.EdDSA, otherPub},
		{"fail/none-alg-param", edTok, "none", edPub},
		{"fail/nil-key", edTok, keys.EdDSA, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.tok)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := VerifySignature(p, tc.alg, tc.pub); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifySignature = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	in := []keys.Key{
		{KID: "ed", Alg: keys.EdDSA, Public: edPub},
		{KID: "ec", Alg: keys.ES256, Public: ecPriv.Public()},
	}
	b, err := MarshalJWKS(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].KID != "ed" || out[0].Alg != keys.EdDSA || !edPub.Equal(out[0].Public) ||
		out[1].Alg != keys.ES256 || !ecPriv.PublicKey.Equal(out[1].Public) {
		t.Fatalf("round trip: %+v", out)
	}
	for _, bad := range []string{
		`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"` + b64.EncodeToString(edPub) + `"},{"kty":"OKP","crv":"Ed25519","kid":"a","x":"` + b64.EncodeToString(edPub) + `"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + b64.EncodeToString(edPub) + `"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"ES256","x":"` + b64.EncodeToString(edPub) + `"}]}`,
		`{"keys":[{"kty":"oct","kid":"a","k":"AAAA"}]}`,
		`{"keys":[],"keys":[]}`,
		`{}`,
	} {
		if _, err := ParseJWKS([]byte(bad)); !errors.Is(err, ErrKeySet) {
			t.Errorf("fail/%s: %v", bad[:40], err)
		}
	}
}

// FuzzParse feeds the parser arbitrary input. Whatever it accepts must
// re-encode exactly to what it was given, and no input may panic.
func FuzzParse(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tok, _ := Sign(priv, keys.EdDSA, "k1", testClaims())
	f.Add(tok)
	f.Add(craft(priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["x"]}`, `{}`))
	f.Add("a.b.c")
	f.Add("..")
	for _, name := range []string{"json_web_signature_test.json", "json_web_key_test.json"} {
		b, err := os.ReadFile(filepath.Join(vectorsDir, name))
		if err != nil {
			f.Fatal(err)
		}
		var jf jwsFile
		if err := json.Unmarshal(b, &jf); err != nil {
			f.Fatal(err)
		}
		for _, g := range jf.TestGroups {
			for _, tc := range g.Tests {
				f.Add(tc.JWS)
			}
		}
	}
	pub := priv.Public()
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(raw) > MaxSize {
			t.Fatalf("accepted %d bytes", len(raw))
		}
		if got := string(p.SigningInput) + "." + b64.EncodeToString(p.Signature); got != raw {
			t.Fatalf("accepted non-canonical token %q", raw)
		}
		if err := VerifySignature(p, keys.EdDSA, pub); err == nil && raw != tok {
			t.Fatalf("fuzzer forged a signature: %q", raw)
		}
	})
}

func BenchmarkVerifyRawEd25519(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tok, _ := Sign(priv, keys.EdDSA, "k1", testClaims())
	p, _ := Parse(tok)
	pub := priv.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, p.SigningInput, p.Signature) {
			b.Fatal("verify")
		}
	}
}

func BenchmarkParseVerifyEd25519(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tok, _ := Sign(priv, keys.EdDSA, "k1", testClaims())
	pub := priv.Public()
	b.ReportAllocs()
	for b.Loop() {
		p, err := Parse(tok)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifySignature(p, keys.EdDSA, pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignRawEd25519(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte(strings.Repeat("x", 300))
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(priv, msg)
	}
}

func BenchmarkSignEd25519(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c := testClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(priv, keys.EdDSA, "k1", c); err != nil {
			b.Fatal(err)
		}
	}
}

// TestES256Negative attacks ES256 verification directly, without the
// Wycheproof files: the "psychic signature" zero values, r and s at and
// beyond the group order, flipped and swapped halves, wrong lengths, another
// key, another curve and a changed payload.
func TestES256Negative(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tok, err := Sign(priv, keys.ES256, "k1", testClaims())
	if err != nil {
		t.Fatal(err)
	}
	good, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(good, keys.ES256, priv.Public()); err != nil {
		t.Fatalf("the untouched token does not verify: %v", err)
	}
	n := elliptic.P256().Params().N
	be := func(v *big.Int) []byte { return v.FillBytes(make([]byte, 32)) }
	r, s := good.Signature[:32], good.Signature[32:]
	cat := func(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }
	flip := func(b []byte, i int) []byte { c := append([]byte{}, b...); c[i] ^= 0x01; return c }
	sPlusN := new(big.Int).Add(new(big.Int).SetBytes(s), n)
	for _, tc := range []struct {
		name string
		sig  []byte
		pub  crypto.PublicKey
		msg  []byte
	}{
		{"fail/zero-r-zero-s", make([]byte, 64), priv.Public(), nil},
		{"fail/zero-r", cat(make([]byte, 32), s), priv.Public(), nil},
		{"fail/zero-s", cat(r, make([]byte, 32)), priv.Public(), nil},
		{"fail/r-is-n", cat(be(n), s), priv.Public(), nil},
		{"fail/s-is-n", cat(r, be(n)), priv.Public(), nil},
		{"fail/all-ff", bytes.Repeat([]byte{0xff}, 64), priv.Public(), nil},
		{"fail/flip-r", cat(flip(r, 31), s), priv.Public(), nil},
		{"fail/flip-s", cat(r, flip(s, 0)), priv.Public(), nil},
		{"fail/swapped", cat(s, r), priv.Public(), nil},
		{"fail/short", good.Signature[:63], priv.Public(), nil},
		{"fail/leading-zero", cat([]byte{0}, good.Signature), priv.Public(), nil},
		{"fail/s-plus-n", cat(r, sPlusN.Bytes()), priv.Public(), nil},
		{"fail/other-key", good.Signature, other.Public(), nil},
		{"fail/p384-key", good.Signature, p384.Public(), nil},
		{"fail/ed25519-key", good.Signature, ed25519.PublicKey(make([]byte, 32)), nil},
		{"fail/changed-payload", good.Signature, priv.Public(), append(append([]byte{}, good.SigningInput...), 'A')},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := *good
			p.Signature = tc.sig
			if tc.msg != nil {
				p.SigningInput = tc.msg
			}
			if err := VerifySignature(&p, keys.ES256, tc.pub); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifySignature = %v, want ErrBadSignature", err)
			}
		})
	}
}
