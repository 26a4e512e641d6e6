package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/keys"
)

// MaxJWKSSize bounds a JWKS document read from the network.
const MaxJWKSSize = 1 << 20

// ErrKeySet: a JWK set is not one custos accepts.
var ErrKeySet = errors.New("token: unacceptable key set")

// ParseJWKS reads a JWK set (RFC 7517) of verification keys. The whole set is
// refused when any member is unacceptable, so that a key set is never half
// understood: private or symmetric keys, key types other than OKP/Ed25519,
// EC/P-256 and RSA of at least 2048 bits, an alg that does not fit the key, use other than "sig", key_ops
// without "verify", points off the curve, missing or duplicate kid, duplicate
// JSON keys. Returned keys carry State [keys.Active]: the set lists keys that
// verify today.
func ParseJWKS(data []byte) ([]keys.Key, error) {
	if len(data) > MaxJWKSSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrKeySet, len(data))
	}
	if err := strictObject(data, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeySet, err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeySet, err)
	}
	if set.Keys == nil {
		return nil, fmt.Errorf("%w: no keys member", ErrKeySet)
	}
	out := make([]keys.Key, 0, len(set.Keys))
	seen := make(map[string]bool, len(set.Keys))
	for i, raw := range set.Keys {
		k, err := ParseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if seen[k.KID] {
			return nil, fmt.Errorf("%w: duplicate kid %q", ErrKeySet, k.KID)
		}
		seen[k.KID] = true
		out = append(out, k)
	}
	return out, nil
}

// ParseJWK reads one public verification key; see [ParseJWKS] for the rules.
func ParseJWK(raw []byte) (keys.Key, error) {
	if err := strictObject(raw, nil); err != nil {
		return keys.Key{}, fmt.Errorf("%w: %v", ErrKeySet, err)
	}
	var meta struct {
		Kty    string    `json:"kty"`
		Kid    *string   `json:"kid"`
		Use    *string   `json:"use"`
		KeyOps *[]string `json:"key_ops"`
		Alg    *string   `json:"alg"`
		D      *string   `json:"d"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return keys.Key{}, fmt.Errorf("%w: %v", ErrKeySet, err)
	}
	if meta.Kid == nil || *meta.Kid == "" {
		return keys.Key{}, fmt.Errorf("%w: key without kid", ErrKeySet)
	}
	if meta.D != nil {
		return keys.Key{}, fmt.Errorf("%w: %q is a private key", ErrKeySet, *meta.Kid)
	}
	if meta.Use != nil && *meta.Use != "sig" {
		return keys.Key{}, fmt.Errorf("%w: %q has use %q", ErrKeySet, *meta.Kid, *meta.Use)
	}
	if meta.KeyOps != nil && !slices.Contains(*meta.KeyOps, "verify") {
		return keys.Key{}, fmt.Errorf("%w: %q key_ops lack verify", ErrKeySet, *meta.Kid)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return keys.Key{}, fmt.Errorf("%w: %q: %v", ErrKeySet, *meta.Kid, err)
	}
	if !jwk.IsPublic() {
		return keys.Key{}, fmt.Errorf("%w: %q is not a public key", ErrKeySet, *meta.Kid)
	}
	var alg keys.Alg
	switch pk := jwk.Key.(type) {
	case ed25519.PublicKey:
		if meta.Kty != "OKP" || len(pk) != ed25519.PublicKeySize {
			return keys.Key{}, fmt.Errorf("%w: %q: bad Ed25519 key", ErrKeySet, *meta.Kid)
		}
		alg = keys.EdDSA
	case *ecdsa.PublicKey:
		if meta.Kty != "EC" || pk.Curve != elliptic.P256() {
			return keys.Key{}, fmt.Errorf("%w: %q: only P-256 EC keys", ErrKeySet, *meta.Kid)
		}
		alg = keys.ES256
	case *rsa.PublicKey:
		if meta.Kty != "RSA" || pk.N.BitLen() < MinRSABits {
			return keys.Key{}, fmt.Errorf("%w: %q: RSA keys of at least %d bits only", ErrKeySet, *meta.Kid, MinRSABits)
		}
		if rocaVulnerable(pk.N) {
			return keys.Key{}, fmt.Errorf("%w: %q: RSA modulus of the ROCA family (CVE-2017-15361), factorable", ErrKeySet, *meta.Kid)
		}
		alg = keys.RS256
	default:
		return keys.Key{}, fmt.Errorf("%w: %q: key type %q not supported", ErrKeySet, *meta.Kid, meta.Kty)
	}
	if meta.Alg != nil && *meta.Alg != string(alg) {
		return keys.Key{}, fmt.Errorf("%w: %q: alg %q does not fit the key", ErrKeySet, *meta.Kid, *meta.Alg)
	}
	return keys.Key{KID: *meta.Kid, Alg: alg, State: keys.Active, Public: jwk.Key}, nil
}

// MarshalJWKS writes the public halves of ks as a JWK set with kid, alg and
// use "sig" on every key. Callers pass only keys that verify today.
func MarshalJWKS(ks []keys.Key) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(ks))}
	for _, k := range ks {
		switch k.Public.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
		default:
			return nil, fmt.Errorf("failed to encode key %q: unsupported public key %T", k.KID, k.Public)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public, KeyID: k.KID, Algorithm: string(k.Alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("failed to encode key set: %w", err)
	}
	return b, nil
}

// rocaPrimes are the small primes of the ROCA fingerprint (Nemec et al.,
// "The Return of Coppersmith's Attack", CCS 2017).
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
	101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

// rocaVulnerable reports whether n has the fingerprint of the moduli an
// Infineon library generated (CVE-2017-15361), whose factors can be found:
// n mod p lies in the subgroup generated by 65537 modulo every prime p
// above. A random modulus does so with negligible probability.
func rocaVulnerable(n *big.Int) bool {
	var r big.Int
	for _, p := range rocaPrimes {
		res := r.Mod(n, big.NewInt(p)).Int64()
		g, x, in := 65537%p, int64(1), false
		for range p {
			if x == res {
				in = true
				break
			}
			x = x * g % p
		}
		if !in {
			return false
		}
	}
	return true
}
