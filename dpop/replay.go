package dpop

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// Replay remembers the proofs a verifier has accepted, so that each is used
// once (RFC 9449 section 11.1). Implementations: [Memory] for one process,
// package dpop/redis for replicas that must share what they have seen.
type Replay interface {
	// Seen records key until the given time and reports whether it was
	// already recorded. An error must refuse the proof (fail closed).
	Seen(ctx context.Context, key string, until time.Time) (bool, error)
}

// ReplayKey is the key under which a proof is remembered: its jti is unique
// per client key, so both are in it; hashed to bound its size.
func ReplayKey(p *Proof) string {
	var buf [64 + MaxJTI]byte // on the stack for any proof Verify accepts
	h := sha256.Sum256(append(append(append(buf[:0], p.JKT...), 0), p.JTI...))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// ReplayUntil is how long a proof must be remembered: as long as some
// verifier with this window could still accept its iat.
func ReplayUntil(p *Proof, window time.Duration) time.Time {
	if window <= 0 {
		window = DefaultWindow
	}
	return p.IssuedAt.Add(window + time.Second)
}

// ErrReplayFull: the in-memory replay cache holds its maximum of live
// entries; proofs are refused until some expire.
var ErrReplayFull = errors.New("dpop: replay cache full")

// Memory is a Replay for one process, bounded to Max live entries.
type Memory struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time
	now  func() time.Time
}

// NewMemory returns a cache of at most max live entries (max > 0). now is
// the clock that expires them (nil: time.Now).
func NewMemory(max int, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{max: max, seen: map[string]time.Time{}, now: now}
}

// Seen implements Replay.
func (m *Memory) Seen(_ context.Context, key string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if t, ok := m.seen[key]; ok && now.Before(t) {
		return true, nil
	}
	if len(m.seen) >= m.max {
		for k, t := range m.seen {
			if !now.Before(t) {
				delete(m.seen, k)
			}
		}
		if len(m.seen) >= m.max {
			return false, ErrReplayFull
		}
	}
	m.seen[key] = until
	return false, nil
}

// Len is the number of entries held, expired ones not yet swept included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}
