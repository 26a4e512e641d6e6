// Package pkcs11 is key custody in a PKCS#11 token (an HSM, or SoftHSM2 in
// tests): keys are generated inside the token as non-extractable, sensitive objects.
//
// EdDSA (Ed25519), ES256 (ECDSA P-256) and RS256 (2048-bit RSA, signing
// only) are supported. ES256 and RS256 go through crypto11. Ed25519 is
// written here by hand over github.com/miekg/pkcs11, because crypto11 v1.6.2
// has no Edwards-curve keys and does not expose its PKCS#11 context: keys
// are made with PKCS#11 3.0's CKM_EC_EDWARDS_KEY_PAIR_GEN (CKK_EC_EDWARDS,
// CKA_EC_PARAMS id-Ed25519) and sign with CKM_EDDSA, and the public key is
// read from CKA_EC_POINT. Tokens whose C_GetMechanismList lacks either
// mechanism refuse EdDSA with [ErrUnsupported] (use ES256 there).
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
	ErrUnsupported = errors.New("pkcs11: algorithm not supported by this backend or token")
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
	ed  *edwards

	mu      sync.RWMutex
	signers map[string]crypto.Signer // crypto11.Signer or *edSigner
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
	ed, err := openEdwards(cfg.Module, cfg.TokenLabel, cfg.PIN)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("failed to open PKCS#11 token %q: %w", cfg.TokenLabel, err)
	}
	return &Token{ctx: c, ed: ed, signers: map[string]crypto.Signer{}}, nil
}

// Close ends the sessions. Keys stay in the token.
func (t *Token) Close() error {
	t.ed.close() // before crypto11, which may finalize the shared module
	return t.ctx.Close()
}

// Supports reports whether the token can generate and sign with alg:
// nil for ES256 and RS256, and for EdDSA when the token lists
// CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA; an [ErrUnsupported] error
// otherwise.
func (t *Token) Supports(alg keys.Alg) error {
	switch alg {
	case keys.ES256, keys.RS256:
		return nil
	case keys.EdDSA:
		if t.ed.supported {
			return nil
		}
		return fmt.Errorf("%w: the token lists no CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA, so it cannot hold EdDSA keys (set keys.alg: ES256)", ErrUnsupported)
	}
	return fmt.Errorf("%w: %q", ErrUnsupported, alg)
}

// Generate makes a key pair of alg inside the token: private half
// CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE true, CKA_EXTRACTABLE false,
// CKA_SIGN true (and CKA_DECRYPT false for RSA, CKA_DERIVE false for
// Ed25519).
func (t *Token) Generate(ctx context.Context, id string, alg keys.Alg) (crypto.PublicKey, error) {
	if err := t.Supports(alg); err != nil {
		return nil, err
	}
	if id == "" || len(id) > MaxIDLen {
		return nil, fmt.Errorf("%w: length %d not in 1..%d", ErrBadID, len(id), MaxIDLen)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, err := t.find(id); err != nil {
		return nil, err
	} else if s != nil {
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	if alg == keys.EdDSA {
		s, err := t.ed.generate(id)
		if err != nil {
			return nil, err
		}
		t.signers[id] = s
		return s.Public(), nil
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
func (t *Token) find(id string) (crypto.Signer, error) {
	if s, ok := t.signers[id]; ok {
		return s, nil
	}
	if id == "" || len(id) > MaxIDLen {
		return nil, nil // no key can have it
	}
	// Ed25519 first: crypto11 fails on the CKK_EC_EDWARDS pairs it cannot
	// use. Skipped on tokens without the mechanisms, which hold no such
	// pairs and may reject CKK_EC_EDWARDS in a search template.
	if t.ed.supported {
		es, err := t.ed.find(id)
		if err != nil {
			return nil, err
		}
		if es != nil {
			return es, nil
		}
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

// Signer returns a signer for id that signs inside the token. For ES256 and
// RS256 keys Sign takes a SHA-256 digest (ES256 returns an ASN.1 DER
// signature); for Ed25519 keys it takes the message itself and
// crypto.Hash(0).
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
	switch s := s.(type) {
	case *edSigner:
		s.destroyed.Store(true)
		if _, err := t.ed.destroy(id); err != nil {
			return err
		}
	case crypto11.Signer:
		if err := s.Delete(); err != nil {
			return fmt.Errorf("failed to destroy key %q in token: %w", id, err)
		}
	}
	delete(t.signers, id)
	return nil
}
