package provider

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	"github.com/custos-dev/custos/jwks"
	"github.com/go-jose/go-jose/v4"
)

// Bounds of a provider's key set.
const (
	maxJWKSKeys = 64
	minRSABits  = 2048
)

// parseKeys reads a published key set. Keys for encryption and keys of
// types custos does not verify are left out (providers publish both);
// a private key refuses the whole set.
func parseKeys(b []byte) (*jose.JSONWebKeySet, error) {
	if len(b) > jwks.MaxBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", jwks.MaxBytes)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("bad key set: %v", err)
	}
	if len(raw.Keys) == 0 || len(raw.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("key set of %d keys (1 to %d)", len(raw.Keys), maxJWKSKeys)
	}
	out := &jose.JSONWebKeySet{}
	for i, kb := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(kb); err != nil {
			continue // a key type go-jose does not read (Keycloak publishes RSA-OAEP and others)
		}
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %d is not a public key", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch pk := k.Key.(type) {
		case ed25519.PublicKey:
		case *ecdsa.PublicKey:
			if pk.Curve != elliptic.P256() {
				continue
			}
		case *rsa.PublicKey:
			if pk.N.BitLen() < minRSABits {
				continue
			}
		default:
			continue
		}
		out.Keys = append(out.Keys, k)
	}
	if len(out.Keys) == 0 {
		return nil, fmt.Errorf("key set holds no signature key custos verifies (Ed25519, P-256, RSA of %d bits or more)", minRSABits)
	}
	return out, nil
}
