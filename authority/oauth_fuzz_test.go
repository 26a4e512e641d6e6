package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// FuzzParseForm: whatever the token endpoint accepts as a form names each
// parameter once, with a non-empty UTF-8 value, and no input panics.
func FuzzParseForm(f *testing.F) {
	for _, s := range []string{
		"grant_type=client_credentials&scope=a+b",
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
		"grant_type=client_credentials&grant_type=password",
		"a=1;b=2", "%zz=1", "scope=%ff", "=", "&&&", "client_id=&client_secret=x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseFormBody(b)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != "invalid_request" {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		for k, vs := range q {
			if len(vs) != 1 || vs[0] == "" {
				t.Fatalf("parameter %q: %q", k, vs)
			}
		}
	})
}

// FuzzClientAssertion: no client_assertion authenticates a client without
// a signature by its registered key, and none panics.
func FuzzClientAssertion(f *testing.F) {
	fx := newFixture(f)
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	k := jose.JSONWebKey{Key: priv, KeyID: "k1", Algorithm: "EdDSA"}
	c, _, _ := fx.creds.AddClient(ctx, "svc", []string{"shop-api"}, "")
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.Public()}})
	if err := fx.creds.SetClientAuth(ctx, c.ID, ClientAuth{JWKS: jwks}); err != nil {
		f.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged := signJWT(f, jose.JSONWebKey{Key: other, KeyID: "k1", Algorithm: "EdDSA"}, "", map[string]any{
		"iss": c.ID, "sub": c.ID, "aud": fx.auth.TokenEndpoint(), "jti": "j", "exp": fx.now.Unix() + 60})
	f.Add(forged)
	f.Add(forged[:strings.LastIndexByte(forged, '.')+1])
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	h := &Handler{Auth: fx.auth, Creds: fx.creds}
	f.Fuzz(func(t *testing.T, raw string) {
		form := url.Values{"client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {raw}}
		if got, err := h.assertionClient(ctx, form); err == nil {
			t.Fatalf("assertion %q authenticated %s", raw, got.ID)
		}
	})
}
