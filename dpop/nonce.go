package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// Nonces issues and checks server nonces (RFC 9449 section 8) without state:
// a nonce is a period number and its HMAC under a secret, so every replica
// that holds the secret accepts the nonces of the others. A nonce is
// accepted during the period it was issued in and the next one.
type Nonces struct {
	key    []byte
	period time.Duration
}

// DefaultNoncePeriod is how long one nonce is handed out.
const DefaultNoncePeriod = time.Minute

// NewNonces returns a nonce source keyed by secret (at least 32 bytes; the
// caller checks). period 0 is DefaultNoncePeriod.
func NewNonces(secret []byte, period time.Duration) *Nonces {
	if period <= 0 {
		period = DefaultNoncePeriod
	}
	return &Nonces{key: secret, period: period}
}

func (n *Nonces) mac(slot uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], slot)
	m := hmac.New(sha256.New, n.key)
	m.Write(b[:])
	return append(b[:], m.Sum(nil)[:16]...)
}

func (n *Nonces) slot(now time.Time) uint64 { return uint64(now.UnixNano() / int64(n.period)) }

// Issue is the nonce to hand out at now (the DPoP-Nonce header).
func (n *Nonces) Issue(now time.Time) string {
	return base64.RawURLEncoding.EncodeToString(n.mac(n.slot(now)))
}

// Valid reports whether nonce was issued in now's period or the one before.
func (n *Nonces) Valid(nonce string, now time.Time) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false
	}
	slot := binary.BigEndian.Uint64(b[:8])
	cur := n.slot(now)
	if slot != cur && slot+1 != cur {
		return false
	}
	return hmac.Equal(b, n.mac(slot))
}
