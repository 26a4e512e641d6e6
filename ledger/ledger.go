// Package ledger is the issuance ledger: every token the authority issued,
// remembered under SHA-256(token) until it expires, so the gateway can refuse a
// token that was signed with a real key but never issued (provenance).
//
// The ledger keeps a compact in-memory index for lookups in front of a durable
// backend (ledger/sqlite embedded, ledger/redis for scale-out).
package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Hash is SHA-256 of the compact-serialised token. The token itself is never stored.
type Hash [32]byte

// HashToken returns the ledger key of a compact token.
func HashToken(raw string) Hash { return sha256.Sum256([]byte(raw)) }

// String is the lowercase hex form used in APIs and logs.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Status is what the ledger knows of a token hash.
type Status uint8

const (
	Unknown Status = iota // never issued, or expired and forgotten
	Live                  // issued and not revoked
	Revoked               // issued, then revoked
)

func (s Status) String() string {
	switch s {
	case Live:
		return "live"
	case Revoked:
		return "revoked"
	}
	return "unknown"
}

// Entry is one issued token's record.
type Entry struct {
	Hash      Hash      `json:"hash"`
	JTI       string    `json:"jti"`
	KID       string    `json:"kid"`
	Subject   string    `json:"sub"`
	Audience  string    `json:"aud"`
	Client    string    `json:"client_id"`
	Session   string    `json:"sid,omitempty"`
	ClientIP  string    `json:"client_ip,omitempty"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
	Revoked   bool      `json:"revoked,omitempty"`
	// Ref is where the backend keeps the record (ledger/sqlite: its row id),
	// set by PutBatch and LoadLive; 0 when the backend has no such thing.
	Ref uint64 `json:"-"`
}
