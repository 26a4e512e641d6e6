package token_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// Sign an access token with a key in custody (any crypto.Signer), then parse
// and verify it the way a resource server does: strict parse first, then the
// signature with the key its kid names, then the claims.
func Example() {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	raw, err := token.Sign(priv, keys.EdDSA, "k-2026-12", token.Claims{
		Issuer: "https://auth.shop.example", Subject: "1020", Audience: "shop-api",
		IssuedAt: 2000000000, NotBefore: 2000000000, ExpiresAt: 2000000300,
		JTI: "7f1c0e1e9b2d4c5a8e3f6a7b8c9d0e1f", ClientID: "login",
	})
	if err != nil {
		panic(err)
	}
	p, err := token.Parse(raw)
	if err != nil {
		panic(err)
	}
	fmt.Println("kid:", p.Header.KID, "typ:", p.Header.Typ)
	fmt.Println("signature:", token.VerifySignature(p, keys.EdDSA, pub))

	other, _, _ := ed25519.GenerateKey(rand.Reader)
	fmt.Println("another key:", token.VerifySignature(p, keys.EdDSA, other))
	fmt.Println("subject:", p.Claims.Subject)
	// Output:
	// kid: k-2026-12 typ: at+jwt
	// signature: <nil>
	// another key: token: bad signature
	// subject: 1020
}
