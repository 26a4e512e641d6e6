package audit

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// algEd25519 is the signed-note algorithm byte for Ed25519 keys
// (https://c2sp.org/signed-note).
const algEd25519 = 0x01

// noteSigner signs checkpoints with an Ed25519 key held by key custody; the
// private key never passes through this package.
type noteSigner struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
	s    crypto.Signer
}

// NewNoteSigner wraps an Ed25519 crypto.Signer (for example one from
// keys.Custody) as a C2SP signed-note signer named name. The name is the
// log's origin line in every checkpoint.
func NewNoteSigner(name string, s crypto.Signer) (note.Signer, error) {
	if !validKeyName(name) {
		return nil, fmt.Errorf("%w: invalid key name %q", ErrBadKey, name)
	}
	if s == nil {
		return nil, fmt.Errorf("%w: nil signer", ErrBadKey)
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: checkpoint key must be Ed25519, got %T", ErrBadKey, s.Public())
	}
	return &noteSigner{name: name, hash: keyHash(name, pub), pub: pub, s: s}, nil
}

func (n *noteSigner) Name() string    { return n.name }
func (n *noteSigner) KeyHash() uint32 { return n.hash }

func (n *noteSigner) Sign(msg []byte) ([]byte, error) {
	sig, err := n.s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("failed to sign checkpoint: %w", err)
	}
	return sig, nil
}

// VerifierKey returns the note verifier key ("name+hash+base64") that checks
// this signer's checkpoints. Open writes it to the log directory as vkey.
func (n *noteSigner) VerifierKey() string { return vkey(n.name, n.pub) }

// NewNoteVerifier returns the signed-note verifier for an Ed25519 checkpoint
// key named name.
func NewNoteVerifier(name string, pub ed25519.PublicKey) (note.Verifier, error) {
	if !validKeyName(name) {
		return nil, fmt.Errorf("%w: invalid key name %q", ErrBadKey, name)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: Ed25519 public key has %d bytes", ErrBadKey, len(pub))
	}
	v, err := note.NewVerifier(vkey(name, pub))
	if err != nil {
		return nil, fmt.Errorf("failed to build note verifier: %w", err)
	}
	return v, nil
}

// vkey is the note verifier key encoding: name+hex(key hash)+base64(alg||pub).
func vkey(name string, pub ed25519.PublicKey) string {
	return name + "+" + fmt.Sprintf("%08x", keyHash(name, pub)) + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{algEd25519}, pub...))
}

// keyHash is the signed-note key ID: the first four bytes of
// SHA-256(name || "\n" || alg || pub), big-endian.
func keyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write([]byte{algEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName mirrors the signed-note rule: non-empty, no spaces or '+',
// only printable characters.
func validKeyName(name string) bool {
	if name == "" || strings.ContainsAny(name, "+ \t\n") {
		return false
	}
	for _, r := range name {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}
