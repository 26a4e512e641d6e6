package sealed

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// File layout, version 1. Every multi-byte integer is big-endian.
//
//	offset size field
//	0      8    magic "CUSTOSKR"
//	8      1    version (1)
//	9      1    kdf (0 = raw 32-byte KEK, 1 = argon2id passphrase)
//	10     4    argon2id time (iterations; 0 for raw)
//	14     4    argon2id memory in KiB (0 for raw)
//	18     1    argon2id threads (0 for raw)
//	19     16   argon2id salt (zero for raw)
//	35     16   KEK check: HMAC-SHA256(kek, "custos keyring kek check v1")[:16]
//	51     12   AES-GCM nonce
//	63     8    header checksum: SHA-256(bytes 0..63)[:8]
//	71     ...  AES-256-GCM ciphertext of the JSON payload, with bytes 0..71 as AAD
//
// The checksum catches an altered header before the KEK check runs, so a
// damaged header reads as ErrCorrupt rather than ErrWrongKEK. It is not a
// security boundary: the header is authenticated as GCM additional data.
const (
	magic       = "CUSTOSKR"
	version1    = 1
	headerSize  = 71
	saltSize    = 16
	checkSize   = 16
	nonceSize   = 12
	sumSize     = 8
	gcmTagSize  = 16
	maxFileSize = 16 << 20 // a keyring of a few hundred keys is a few tens of KiB

	kdfRaw      = 0
	kdfArgon2id = 1

	// Bounds on argon2id parameters read from a file, so a hostile header
	// cannot make Open burn unbounded memory or time.
	maxArgonTime    = 16
	maxArgonMemory  = 1 << 20 // KiB, 1 GiB
	maxArgonThreads = 64
)

type header struct {
	kdf     uint8
	time    uint32
	memory  uint32
	threads uint8
	salt    [saltSize]byte
	check   [checkSize]byte
	nonce   [nonceSize]byte
}

func (h *header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b[0:8], magic)
	b[8] = version1
	b[9] = h.kdf
	binary.BigEndian.PutUint32(b[10:14], h.time)
	binary.BigEndian.PutUint32(b[14:18], h.memory)
	b[18] = h.threads
	copy(b[19:35], h.salt[:])
	copy(b[35:51], h.check[:])
	copy(b[51:63], h.nonce[:])
	sum := sha256.Sum256(b[:63])
	copy(b[63:71], sum[:sumSize])
	return b
}

// parseHeader reads and bounds-checks the header of a keyring file. It returns
// the header and the ciphertext that follows it. Errors are plain
// descriptions; the caller wraps them with ErrCorrupt.
func parseHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < headerSize+gcmTagSize {
		return h, nil, fmt.Errorf("file is %d bytes, shorter than the smallest keyring", len(b))
	}
	if !bytes.Equal(b[0:8], []byte(magic)) {
		return h, nil, fmt.Errorf("not a custos keyring (bad magic)")
	}
	if b[8] != version1 {
		return h, nil, fmt.Errorf("unsupported keyring version %d", b[8])
	}
	sum := sha256.Sum256(b[:63])
	if !bytes.Equal(sum[:sumSize], b[63:71]) {
		return h, nil, fmt.Errorf("header checksum mismatch")
	}
	h.kdf = b[9]
	h.time = binary.BigEndian.Uint32(b[10:14])
	h.memory = binary.BigEndian.Uint32(b[14:18])
	h.threads = b[18]
	copy(h.salt[:], b[19:35])
	copy(h.check[:], b[35:51])
	copy(h.nonce[:], b[51:63])
	switch h.kdf {
	case kdfRaw:
		if h.time != 0 || h.memory != 0 || h.threads != 0 || h.salt != [saltSize]byte{} {
			return h, nil, fmt.Errorf("raw-key keyring carries key-derivation parameters")
		}
	case kdfArgon2id:
		if h.time < 1 || h.time > maxArgonTime {
			return h, nil, fmt.Errorf("argon2id time %d out of range 1..%d", h.time, maxArgonTime)
		}
		if h.memory < 8*uint32(max(h.threads, 1)) || h.memory > maxArgonMemory {
			return h, nil, fmt.Errorf("argon2id memory %d KiB out of range", h.memory)
		}
		if h.threads < 1 || h.threads > maxArgonThreads {
			return h, nil, fmt.Errorf("argon2id threads %d out of range 1..%d", h.threads, maxArgonThreads)
		}
	default:
		return h, nil, fmt.Errorf("unknown key derivation %d", h.kdf)
	}
	return h, b[headerSize:], nil
}
