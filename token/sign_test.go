package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/keys"
)

// joseOpaque lets go-jose sign through a crypto.Signer, as custody does.
type joseOpaque struct {
	s   crypto.Signer
	alg jose.SignatureAlgorithm
}

func (o *joseOpaque) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: o.s.Public(), Algorithm: string(o.alg), Use: "sig"}
}

func (o *joseOpaque) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{o.alg} }

func (o *joseOpaque) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg == jose.EdDSA {
		return o.s.Sign(rand.Reader, payload, crypto.Hash(0))
	}
	d := sha256.Sum256(payload)
	der, err := o.s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return derToP1363(der)
}

// signWithJose is the reference: the same token made by go-jose.
func signWithJose(t testing.TB, s crypto.Signer, alg jose.SignatureAlgorithm, kid string, c Claims) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var key any = &joseOpaque{s: s, alg: alg}
	if alg == jose.RS256 {
		key = s // go-jose's own RSA signing: an independent reference
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType(Type).WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sign's hand-made compact JWS is byte for byte what go-jose makes (Ed25519
// signatures are deterministic), for plain and awkward kids and claims, and
// go-jose verifies the ES256 ones.
func TestSignMatchesGoJose(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPriv := testRSAKey(t)
	weird := testClaims()
	weird.Subject = `mem"ber\<é>&` + "\u2028"
	weird.Scope = "profile addresses"
	for _, kid := range []string{"k-20261125-1", `ki"d\/<>&`, "ключ"} {
		for _, c := range []Claims{testClaims(), weird} {
			got, err := Sign(edPriv, keys.EdDSA, kid, c)
			if err != nil {
				t.Fatal(err)
			}
			if want := signWithJose(t, edPriv, jose.EdDSA, kid, c); got != want {
				t.Fatalf("kid %q:\n got %s\nwant %s", kid, got, want)
			}
			// RSASSA-PKCS1-v1_5 is deterministic too.
			rs, err := Sign(rsaPriv, keys.RS256, kid, c)
			if err != nil {
				t.Fatal(err)
			}
			if want := signWithJose(t, rsaPriv, jose.RS256, kid, c); rs != want {
				t.Fatalf("RS256 kid %q:\n got %s\nwant %s", kid, rs, want)
			}

			es, err := Sign(ecPriv, keys.ES256, kid, c)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := jose.ParseSigned(es, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := obj.Verify(ecPriv.Public()); err != nil {
				t.Fatalf("go-jose does not verify the ES256 token: %v", err)
			}
			if h := obj.Signatures[0].Header; h.KeyID != kid || h.ExtraHeaders[jose.HeaderType] != Type {
				t.Fatalf("header as go-jose reads it: %+v", h)
			}
		}
	}
}

// BenchmarkSignGoJose is the reference for BenchmarkSign (token_test.go):
// the same claims signed through go-jose.
func BenchmarkSignGoJose(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c := testClaims()
	for range b.N {
		signWithJose(b, priv, jose.EdDSA, "k1", c)
	}
}
