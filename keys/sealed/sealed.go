// Package sealed is the embedded key custody: signing keys generated in-process
// and kept only as AES-256-GCM ciphertext under a key-encryption key, in one
// file, or in one row of PostgreSQL shared by authority replicas ([OpenPostgres]).
//
// Use [Open] with a KEK from [KEKFromFile], [KEKFromEnv] or [KEKFromPassphrase].
// Open creates the file only when it does not exist; a damaged file or a wrong
// KEK is an error ([ErrCorrupt], [ErrWrongKEK]), never a reason to start over.
// Private keys stay in memory inside this package; [Keyring.Signer] hands out a
// crypto.Signer that signs in place.
package sealed

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/custos-dev/custos/keys"
)

// Sentinel errors. Open wraps ErrWrongKEK and ErrCorrupt with the file path.
var (
	ErrWrongKEK    = errors.New("sealed: wrong key-encryption key for keyring")
	ErrCorrupt     = errors.New("sealed: keyring file is damaged or was altered")
	ErrExists      = errors.New("sealed: key id already exists")
	ErrBadID       = errors.New("sealed: invalid key id")
	ErrUnsupported = errors.New("sealed: unsupported algorithm")
	ErrClosed      = errors.New("sealed: keyring closed")
)

// MaxIDLen bounds key ids.
const MaxIDLen = 128

// Keyring is a sealed keyring file and the keys it holds. It is safe for
// concurrent use.
type Keyring struct {
	path string
	// A keyring kept in a database (OpenPostgres) instead of a file: the
	// sealed image and its version, for compare-and-swap writes.
	db      *sql.DB
	version int64
	kek     KEK

	mu     sync.RWMutex
	hdr    header // kdf, params and salt; a fresh nonce is drawn per write
	aead   cipher.AEAD
	keys   map[string]*entry
	closed bool
}

type entry struct {
	id      string
	alg     keys.Alg
	created time.Time
	priv    crypto.Signer // ed25519.PrivateKey or *ecdsa.PrivateKey
	gone    atomic.Bool   // set by Destroy and Close
}

// payload is the plaintext sealed in the file.
type payload struct {
	V    int          `json:"v"`
	Keys []payloadKey `json:"keys"`
}

type payloadKey struct {
	ID      string    `json:"id"`
	Alg     keys.Alg  `json:"alg"`
	Created time.Time `json:"created"`
	Private []byte    `json:"private"` // Ed25519 seed or P-256 scalar, 32 bytes
}

var _ keys.Custody = (*Keyring)(nil)

// Open opens the keyring at path, sealed under kek. When path does not exist
// it writes a new, empty keyring there. Any other failure to read the file is
// an error: a wrong KEK wraps ErrWrongKEK, a tampered, truncated or unreadable
// file wraps ErrCorrupt.
func Open(path string, kek KEK) (*Keyring, error) {
	kdf, err := kek.kdf()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return create(path, kek, kdf)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read keyring %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("keyring %s: %w: larger than %d bytes", path, ErrCorrupt, maxFileSize)
	}
	k, err := decode(b, kek)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	k.path = path
	return k, nil
}

func create(path string, kek KEK, kdf uint8) (*Keyring, error) {
	k, err := newEmpty(kek, kdf)
	if err != nil {
		return nil, err
	}
	k.path = path
	if err := k.writeLocked(k.keys); err != nil {
		return nil, err
	}
	return k, nil
}

// newEmpty is a keyring with no keys and a fresh header, not yet stored.
func newEmpty(kek KEK, kdf uint8) (*Keyring, error) {
	h := header{kdf: kdf}
	if kdf == kdfArgon2id {
		h.time, h.memory, h.threads = argonParams.time, argonParams.memory, argonParams.threads
		if _, err := rand.Read(h.salt[:]); err != nil {
			return nil, fmt.Errorf("failed to draw salt: %w", err)
		}
	}
	key := kek.derive(&h)
	h.check = checkValue(key)
	aead, err := newAEAD(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	return &Keyring{hdr: h, aead: aead, keys: map[string]*entry{}}, nil
}

// decode authenticates and decrypts a keyring file image.
func decode(b []byte, kek KEK) (*Keyring, error) {
	h, ct, err := parseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	kdf, err := kek.kdf()
	if err != nil {
		return nil, err
	}
	if kdf != h.kdf {
		return nil, fmt.Errorf("%w: the file is sealed with a %s, not a %s", ErrWrongKEK, kdfName(h.kdf), kdfName(kdf))
	}
	key := kek.derive(&h)
	defer clear(key)
	want := checkValue(key)
	if !hmac.Equal(want[:], h.check[:]) {
		return nil, ErrWrongKEK
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, h.nonce[:], ct, b[:headerSize])
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	defer clear(plain)
	var p payload
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("%w: bad payload: %v", ErrCorrupt, err)
	}
	if p.V != 1 {
		return nil, fmt.Errorf("%w: unsupported payload version %d", ErrCorrupt, p.V)
	}
	k := &Keyring{hdr: h, aead: aead, keys: make(map[string]*entry, len(p.Keys))}
	for _, pk := range p.Keys {
		priv, err := privateFrom(pk.Alg, pk.Private)
		clear(pk.Private)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrCorrupt, pk.ID, err)
		}
		if checkID(pk.ID) != nil || k.keys[pk.ID] != nil {
			return nil, fmt.Errorf("%w: bad or duplicate key id %q", ErrCorrupt, pk.ID)
		}
		k.keys[pk.ID] = &entry{id: pk.ID, alg: pk.Alg, created: pk.Created, priv: priv}
	}
	return k, nil
}

func kdfName(kdf uint8) string {
	if kdf == kdfArgon2id {
		return "passphrase"
	}
	return "raw key"
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("failed to set up AES-256: %w", err)
	}
	return cipher.NewGCM(block)
}

// Path is the keyring file.
func (k *Keyring) Path() string { return k.path }

// Generate makes a new key of alg under id, seals the keyring to disk and
// returns the public key. The key exists only if the write succeeded.
func (k *Keyring) Generate(ctx context.Context, id string, alg keys.Alg) (crypto.PublicKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	priv, err := generate(alg)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, ErrClosed
	}
	for range casAttempts {
		pub, err := k.generateLocked(id, alg, priv)
		if !errors.Is(err, errConflict) {
			return pub, err
		}
		if err := k.reloadLocked(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("failed to add key %q: the shared keyring kept changing", id)
}

func (k *Keyring) generateLocked(id string, alg keys.Alg, priv crypto.Signer) (crypto.PublicKey, error) {
	if _, ok := k.keys[id]; ok {
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	next := make(map[string]*entry, len(k.keys)+1)
	for i, e := range k.keys {
		next[i] = e
	}
	next[id] = &entry{id: id, alg: alg, created: time.Now().UTC(), priv: priv}
	if err := k.writeLocked(next); err != nil {
		return nil, err
	}
	k.keys = next
	return priv.Public(), nil
}

// Signer returns a signer for id. Its Sign fails with keys.ErrNotFound once
// id is destroyed or the keyring is closed.
func (k *Keyring) Signer(id string) (crypto.Signer, error) {
	k.mu.RLock()
	e, ok := k.keys[id]
	closed := k.closed
	k.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok && k.db != nil {
		// Another replica may have made it: read the shared keyring again.
		k.mu.Lock()
		err := k.reloadLocked()
		e, ok = k.keys[id]
		k.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", keys.ErrNotFound, id)
	}
	return &signer{e: e}, nil
}

// Destroy removes id from the keyring and rewrites the file without it.
func (k *Keyring) Destroy(ctx context.Context, id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	for range casAttempts {
		err := k.destroyLocked(id)
		if !errors.Is(err, errConflict) {
			return err
		}
		if err := k.reloadLocked(); err != nil {
			return err
		}
	}
	return fmt.Errorf("failed to destroy key %q: the shared keyring kept changing", id)
}

func (k *Keyring) destroyLocked(id string) error {
	e, ok := k.keys[id]
	if !ok {
		return fmt.Errorf("%w: %q", keys.ErrNotFound, id)
	}
	next := make(map[string]*entry, len(k.keys))
	for i, x := range k.keys {
		if i != id {
			next[i] = x
		}
	}
	if err := k.writeLocked(next); err != nil {
		return err
	}
	k.keys = next
	e.gone.Store(true)
	return nil
}

// IDs lists the key ids held, in no particular order.
func (k *Keyring) IDs() []string {
	if k.db != nil {
		k.mu.Lock()
		if !k.closed {
			_ = k.reloadLocked() // on failure, the ids known here
		}
		k.mu.Unlock()
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, 0, len(k.keys))
	for id := range k.keys {
		out = append(out, id)
	}
	return out
}

// Close forgets the keys held in memory; signers handed out stop working.
func (k *Keyring) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.keys {
		e.gone.Store(true)
	}
	k.keys = nil
	k.closed = true
	return nil
}

// writeLocked seals set and replaces the file atomically: temp file in the
// same directory, fsync, rename, fsync of the directory.
func (k *Keyring) writeLocked(set map[string]*entry) error {
	out, h, err := k.sealLocked(set)
	if err != nil {
		return err
	}
	if k.db != nil {
		if err := k.saveDB(out); err != nil {
			return err
		}
	} else if err := writeAtomic(k.path, out); err != nil {
		return fmt.Errorf("failed to write keyring %s: %w", k.path, err)
	}
	k.hdr = h
	return nil
}

// sealLocked encrypts set into a keyring image under a fresh nonce, and
// returns the image and its header.
func (k *Keyring) sealLocked(set map[string]*entry) ([]byte, header, error) {
	p := payload{V: 1, Keys: make([]payloadKey, 0, len(set))}
	for _, e := range set {
		pb := privateBytes(e.priv)
		if len(pb) != 32 && (e.alg != keys.RS256 || len(pb) == 0) {
			return nil, header{}, fmt.Errorf("failed to encode key %q", e.id)
		}
		p.Keys = append(p.Keys, payloadKey{ID: e.id, Alg: e.alg, Created: e.created, Private: pb})
	}
	plain, err := json.Marshal(p)
	for _, pk := range p.Keys {
		clear(pk.Private)
	}
	if err != nil {
		return nil, header{}, fmt.Errorf("failed to encode keyring: %w", err)
	}
	defer clear(plain)
	h := k.hdr
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return nil, header{}, fmt.Errorf("failed to draw nonce: %w", err)
	}
	hb := h.marshal()
	return k.aead.Seal(hb, h.nonce[:], plain, hb), h, nil
}

func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrBadID, len(id), MaxIDLen)
	}
	for _, r := range id {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("%w: %q has a character outside printable ASCII", ErrBadID, id)
		}
	}
	return nil
}

func generate(alg keys.Alg) (crypto.Signer, error) {
	switch alg {
	case keys.EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("failed to generate Ed25519 key: %w", err)
		}
		return priv, nil
	case keys.ES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("failed to generate P-256 key: %w", err)
		}
		return priv, nil
	case keys.RS256:
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("failed to generate RSA key: %w", err)
		}
		return priv, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, alg)
}

// rsaBits is the size of RS256 keys the keyring makes.
const rsaBits = 2048

func privateBytes(s crypto.Signer) []byte {
	switch p := s.(type) {
	case ed25519.PrivateKey:
		return append([]byte(nil), p.Seed()...)
	case *ecdsa.PrivateKey:
		b, err := p.Bytes()
		if err != nil {
			return nil
		}
		return b
	case *rsa.PrivateKey:
		return x509.MarshalPKCS1PrivateKey(p)
	}
	return nil
}

func privateFrom(alg keys.Alg, b []byte) (crypto.Signer, error) {
	if alg == keys.RS256 {
		priv, err := x509.ParsePKCS1PrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("bad RSA private key: %w", err)
		}
		if priv.N.BitLen() < rsaBits {
			return nil, fmt.Errorf("RSA private key of %d bits", priv.N.BitLen())
		}
		return priv, nil
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("private key is %d bytes, want 32", len(b))
	}
	switch alg {
	case keys.EdDSA:
		return ed25519.NewKeyFromSeed(b), nil
	case keys.ES256:
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b)
		if err != nil {
			return nil, fmt.Errorf("bad P-256 private key: %w", err)
		}
		return priv, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, alg)
}

// signer signs with a key held in the keyring. It is not the private key
// itself, so a caller cannot type-assert its way to the private bytes.
type signer struct{ e *entry }

func (s *signer) Public() crypto.PublicKey { return s.e.priv.Public() }

// Sign signs digest (Ed25519: the whole message, opts crypto.Hash(0); ES256:
// a SHA-256 digest, ASN.1 DER signature).
func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.e.gone.Load() {
		return nil, fmt.Errorf("%w: %q was destroyed", keys.ErrNotFound, s.e.id)
	}
	if r == nil {
		r = rand.Reader
	}
	return s.e.priv.Sign(r, digest, opts)
}
