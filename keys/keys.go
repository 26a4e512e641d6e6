// Package keys holds signing keys in custody and runs their lifecycle: generate
// inside a backend that never exports the private half, rotate on a schedule,
// move keys through active → verify-only → retired, and revoke in seconds.
//
// Backends live in sub-packages: keys/sealed (the embedded default, an
// AES-256-GCM sealed keyring file) and keys/pkcs11 (an HSM through PKCS#11).
package keys

import (
	"context"
	"crypto"
	"errors"
	"time"
)

// Alg is a JWS signing algorithm custody can generate keys for.
type Alg string

const (
	EdDSA Alg = "EdDSA" // Ed25519, the default
	ES256 Alg = "ES256" // ECDSA P-256 with SHA-256
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256 and 2048-bit keys (RFC 7518
	// section 3.3), for resource servers that verify nothing else (RFC 9068
	// section 4 makes it mandatory to implement); never the default.
	RS256 Alg = "RS256"
)

// State is where a key is in its lifecycle.
type State string

const (
	Active     State = "active"      // signs new tokens and verifies
	VerifyOnly State = "verify-only" // verifies tokens it signed before; never signs
	Retired    State = "retired"     // neither signs nor verifies; kept for the record
	Revoked    State = "revoked"     // withdrawn; absent from JWKS at once
)

// Sentinel errors callers branch on.
var (
	ErrNotFound   = errors.New("keys: no such key")
	ErrNotSigning = errors.New("keys: key may not sign")
)

// Custody is a backend that generates keys and signs with them. Private key
// material never leaves it: Signer returns a crypto.Signer whose Sign runs in
// custody, and there is no method that returns private bytes.
type Custody interface {
	// Generate makes a new key of alg inside custody under id.
	Generate(ctx context.Context, id string, alg Alg) (crypto.PublicKey, error)
	// Signer returns a signer for id.
	Signer(id string) (crypto.Signer, error)
	// Destroy removes id's private key from custody for good.
	Destroy(ctx context.Context, id string) error
}

// Key is the public record of one signing key: metadata, never private material.
type Key struct {
	KID          string           `json:"kid"`
	Alg          Alg              `json:"alg"`
	State        State            `json:"state"`
	Backend      string           `json:"backend"`
	CreatedAt    time.Time        `json:"created_at"`
	DemotedAt    *time.Time       `json:"demoted_at,omitempty"` // when it left active
	RetiredAt    *time.Time       `json:"retired_at,omitempty"`
	RevokedAt    *time.Time       `json:"revoked_at,omitempty"`
	RevokeReason string           `json:"revoke_reason,omitempty"`
	Public       crypto.PublicKey `json:"-"`
}
