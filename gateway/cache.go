package gateway

import (
	"crypto"
	"sync"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// cached is a token whose signature verified under key kid.
type cached struct {
	claims token.Claims
	kid    string
	alg    keys.Alg
	pub    crypto.PublicKey
}

// verifiedCache remembers verified tokens by hash, bounded in size. Only
// tokens whose signature verified are stored, so a flood of forgeries cannot
// fill it. Entries leave when their token expires; when the cache is full of
// live tokens it is emptied and refills from traffic.
type verifiedCache struct {
	mu  sync.RWMutex
	m   map[ledger.Hash]cached
	max int
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{m: make(map[ledger.Hash]cached), max: max}
}

func (c *verifiedCache) get(h ledger.Hash) (cached, bool) {
	if c.max == 0 {
		return cached{}, false
	}
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	return e, ok
}

func (c *verifiedCache) put(h ledger.Hash, e cached) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		now := time.Now().Unix()
		for k, v := range c.m {
			if v.claims.ExpiresAt < now {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[h] = e
}
