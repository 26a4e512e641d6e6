// Package pkcs11 is key custody in a PKCS#11 token (an HSM, or SoftHSM2 in
// tests): keys are generated inside the token as non-extractable, sensitive objects.
//
// ES256 (ECDSA P-256) and RS256 (2048-bit RSA, signing only) are supported:
// crypto11 v1.6 has no Ed25519 (CKM_EC_EDWARDS) support, so Generate
// refuses EdDSA with [ErrUnsupported].
// Key objects carry CKA_ID and CKA_LABEL equal to the key id.
package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"errors"
	"fmt"
	"sync"

	"github.com/ThalesGroup/crypto11"

	"github.com/custos-dev/custos/keys"
)

// Sentinel errors.
var (
	ErrUnsupported = errors.New("pkcs11: algorithm not supported by this backend (ES256 or RS256 only)")
	ErrExists      = errors.New("pkcs11: key id already exists in the token")
	ErrBadID       = errors.New("pkcs11: invalid key id")
)

// rsaBits is the size of RS256 keys made in the token.
const rsaBits = 2048

// MaxIDLen bounds key ids (CKA_ID and CKA_LABEL).
const MaxIDLen = 128

// Config selects the PKCS#11 module, the token and the user PIN.
type Config struct {
	Module     string // path to the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel string // token to use
	PIN        string // user PIN
}

// Token is an open session pool on one PKCS#11 token. It is safe for
// concurrent use.
type Token struct {
	ctx *crypto11.Context

	mu      sync.RWMutex
	signers map[string]crypto11.Signer
}

var _ keys.Custody = (*Token)(nil)

// Open logs in to the token described by cfg.
func Open(cfg Config) (*Token, error) {
	if cfg.Module == "" || cfg.TokenLabel == "" {
		return nil, errors.New("pkcs11: config needs Module and TokenLabel")
	}
	c, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		return nil, fmt.Errorf("failed to open PKCS#11 token %q: %w", cfg.TokenLabel, err)
	}
	return &Token{ctx: c, signers: map[string]crypto11.Signer{}}, nil
}

// Close ends the sessions. Keys stay in the token.
func (t *Token) Close() error { return t.ctx.Close() }

// Generate makes an ES256 or RS256 key pair inside the token: private half
// CKA_TOKEN, CKA_SENSITIVE true, CKA_EXTRACTABLE false, CKA_SIGN true (and
// CKA_DECRYPT false for RSA).
func (t *Token) Generate(ctx context.Context, id string, alg keys.Alg) (crypto.PublicKey, error) {
	if alg != keys.ES256 && alg != keys.RS256 {
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, alg)
	}
	if id == "" || len(id) > MaxIDLen {
		return nil, fmt.Errorf("%w: length %d not in 1..%d", ErrBadID, len(id), MaxIDLen)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, _ := t.find(id); s != nil {
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	pub, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(id), []byte(id))
	if err != nil {
		return nil, err
	}
	priv := pub.Copy()
	// Set explicitly rather than rely on crypto11's defaults.
	for _, a := range []struct {
		typ crypto11.AttributeType
		v   bool
	}{
		{crypto11.CkaToken, true},
		{crypto11.CkaPrivate, true},
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
		{crypto11.CkaSign, true},
	} {
		if err := priv.Set(a.typ, a.v); err != nil {
			return nil, err
		}
	}
	var s crypto11.Signer
	if alg == keys.RS256 {
		if err := priv.Set(crypto11.CkaDecrypt, false); err != nil {
			return nil, err
		}
		s, err = t.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, rsaBits)
	} else {
		s, err = t.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	}
	if err != nil {
		return nil, fmt.Errorf("failed to generate key %q in token: %w", id, err)
	}
	t.signers[id] = s
	return s.Public(), nil
}

// find returns the key pair for id from the cache or the token; nil if absent.
func (t *Token) find(id string) (crypto11.Signer, error) {
	if s, ok := t.signers[id]; ok {
		return s, nil
	}
	if id == "" || len(id) > MaxIDLen {
		return nil, nil // no key can have it
	}
	found, err := t.ctx.FindKeyPairs([]byte(id), nil)
	if err != nil {
		return nil, fmt.Errorf("failed to look up key %q in token: %w", id, err)
	}
	if len(found) == 0 {
		return nil, nil
	}
	return found[0], nil
}

// Signer returns a signer for id that signs inside the token. Sign takes a
// SHA-256 digest and returns an ASN.1 DER ECDSA signature.
func (t *Token) Signer(id string) (crypto.Signer, error) {
	t.mu.RLock()
	s, ok := t.signers[id]
	t.mu.RUnlock()
	if ok {
		return s, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.find(id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%w: %q", keys.ErrNotFound, id)
	}
	t.signers[id] = s
	return s, nil
}

// Destroy deletes id's key pair from the token.
func (t *Token) Destroy(ctx context.Context, id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.find(id)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("%w: %q", keys.ErrNotFound, id)
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("failed to destroy key %q in token: %w", id, err)
	}
	delete(t.signers, id)
	return nil
}
