package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Claims are a proof's claims, as a client sets them.
type Claims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	ATH   string `json:"ath,omitempty"`
	Nonce string `json:"nonce,omitempty"`
}

// NewClaims are the claims of a proof for one request at now; accessToken
// may be empty (at the token endpoint), nonce too.
func NewClaims(jti, method, url, accessToken, nonce string, now time.Time) Claims {
	c := Claims{JTI: jti, HTM: method, HTU: url, IAT: now.Unix(), Nonce: nonce}
	if accessToken != "" {
		c.ATH = ATH(accessToken)
	}
	return c
}

// Sign is the client side: a proof with claims c, signed by key (an
// ed25519.PrivateKey or a P-256 *ecdsa.PrivateKey) with its public key in
// the jwk header. It signs with go-jose, so the verifier is checked against
// an independent implementation.
func Sign(key crypto.Signer, c Claims) (string, error) {
	var alg jose.SignatureAlgorithm
	switch key.(type) {
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	case *ecdsa.PrivateKey:
		alg = jose.ES256
	default:
		return "", fmt.Errorf("dpop: cannot sign with %T", key)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{EmbedJWK: true}).WithType(Type))
	if err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	return jws.CompactSerialize()
}
