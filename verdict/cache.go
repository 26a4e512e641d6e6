package verdict

import (
	"crypto"
	"sync"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// cached is a token whose signature verified under key kid: custos's
// (alg, pub) or a provider's (prov).
type cached struct {
	claims token.Claims
	kid    string
	alg    keys.Alg
	pub    crypto.PublicKey
	// prov is set for a provider's token (then alg and pub are unset).
	prov *cachedProvider
}

// Cache remembers verified tokens by hash (SHA-256 of the whole token, never
// the token), bounded in size, so a token seen again skips parsing and
// signature verification; custos's and the providers' alike. Only
// tokens whose signature verified are stored, so a flood of forgeries cannot
// fill it. Entries leave when their token expires; when the cache is full of
// live tokens it is emptied and refills from traffic.
type Cache struct {
	mu  sync.RWMutex
	m   map[ledger.Hash]cached
	max int
}

// NewCache returns a cache of at most max tokens; 0 caches nothing.
func NewCache(max int) *Cache {
	return &Cache{m: make(map[ledger.Hash]cached), max: max}
}

func (c *Cache) get(h ledger.Hash) (cached, bool) {
	if c == nil || c.max == 0 {
		return cached{}, false
	}
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	return e, ok
}

func (c *Cache) put(h ledger.Hash, e cached) {
	if c == nil || c.max == 0 {
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

// Clear forgets every token.
func (c *Cache) Clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}
