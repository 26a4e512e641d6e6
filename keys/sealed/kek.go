package sealed

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/argon2"
)

// KEK is the key-encryption key that seals the keyring: either 32 raw bytes
// (from a file or an environment variable) or a passphrase stretched with
// argon2id. Its String never prints the secret.
type KEK struct {
	raw        []byte // 32 bytes, or nil
	passphrase []byte // or nil
}

// KEKSize is the length in bytes of a raw key-encryption key.
const KEKSize = 32

// Default argon2id parameters for passphrase KEKs (RFC 9106 second recommended
// option, with four lanes). They are written to the keyring header, so they can
// change without breaking existing files.
const (
	DefaultArgon2Time    = 3
	DefaultArgon2Memory  = 64 * 1024 // KiB
	DefaultArgon2Threads = 4
)

// argonParams is the parameter set used when a new passphrase-sealed file is
// written; tests lower it.
var argonParams = struct {
	time, memory uint32
	threads      uint8
}{DefaultArgon2Time, DefaultArgon2Memory, DefaultArgon2Threads}

// ErrBadKEK means a KEK source could not be used (wrong length, bad encoding,
// empty passphrase, missing variable).
var ErrBadKEK = errors.New("sealed: unusable key-encryption key")

// KEKFromBytes returns a raw KEK; b must be exactly 32 bytes. b is copied.
func KEKFromBytes(b []byte) (KEK, error) {
	if len(b) != KEKSize {
		return KEK{}, fmt.Errorf("%w: need %d bytes, got %d", ErrBadKEK, KEKSize, len(b))
	}
	return KEK{raw: bytes.Clone(b)}, nil
}

// KEKFromFile reads a raw KEK from path: the file holds exactly 32 bytes, or
// their standard base64 encoding (one line). The file should be mode 0600.
func KEKFromFile(path string) (KEK, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return KEK{}, fmt.Errorf("failed to read key-encryption key file: %w", err)
	}
	if len(b) == KEKSize {
		return KEKFromBytes(b)
	}
	k, err := kekFromBase64(string(bytes.TrimSpace(b)))
	if err != nil {
		return KEK{}, fmt.Errorf("key-encryption key file %s: %w", path, err)
	}
	return k, nil
}

// KEKFromEnv reads a raw KEK, standard base64, from the environment variable name.
func KEKFromEnv(name string) (KEK, error) {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return KEK{}, fmt.Errorf("%w: environment variable %s is not set", ErrBadKEK, name)
	}
	k, err := kekFromBase64(v)
	if err != nil {
		return KEK{}, fmt.Errorf("environment variable %s: %w", name, err)
	}
	return k, nil
}

// KEKFromPassphrase returns a KEK derived with argon2id from passphrase; the
// salt and parameters live in the keyring header. passphrase is copied.
func KEKFromPassphrase(passphrase []byte) (KEK, error) {
	if len(passphrase) == 0 {
		return KEK{}, fmt.Errorf("%w: empty passphrase", ErrBadKEK)
	}
	return KEK{passphrase: bytes.Clone(passphrase)}, nil
}

func kekFromBase64(s string) (KEK, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return KEK{}, fmt.Errorf("%w: not base64", ErrBadKEK)
	}
	k, err := KEKFromBytes(b)
	clear(b)
	return k, err
}

// String describes the KEK's kind, never its value.
func (k KEK) String() string {
	switch {
	case k.raw != nil:
		return "sealed.KEK(raw)"
	case k.passphrase != nil:
		return "sealed.KEK(passphrase)"
	}
	return "sealed.KEK(empty)"
}

func (k KEK) kdf() (uint8, error) {
	switch {
	case k.raw != nil:
		return kdfRaw, nil
	case k.passphrase != nil:
		return kdfArgon2id, nil
	}
	return 0, fmt.Errorf("%w: empty KEK", ErrBadKEK)
}

// derive returns the AES-256 key for h, which must already carry the KEK's kdf
// and, for a passphrase, its salt and parameters.
func (k KEK) derive(h *header) []byte {
	if h.kdf == kdfArgon2id {
		return argon2.IDKey(k.passphrase, h.salt[:], h.time, h.memory, h.threads, 32)
	}
	return bytes.Clone(k.raw)
}

// checkValue is the KEK check stored in the header. It lets Open tell a wrong
// KEK apart from a damaged file.
func checkValue(key []byte) [checkSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("custos keyring kek check v1"))
	var c [checkSize]byte
	copy(c[:], m.Sum(nil))
	return c
}
