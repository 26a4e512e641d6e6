package ledger

import (
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// Index is the compact in-memory set of live token hashes that answers
// provenance lookups without touching disk. It is safe for concurrent use.
//
// Each entry is keyed by the first 16 bytes of the SHA-256 token hash. The
// truncation is safe: a false "live" answer needs a forged token whose hash
// shares 128 bits with one particular issued token, a second preimage on a
// 128-bit truncation of SHA-256, which costs about 2^128 hash evaluations, and
// even against all 10^7 live tokens at once about 2^105. Accidental collisions
// among issued tokens (birthday bound, 2^64) are out of reach at any realistic
// issuance volume.
//
// The table is sharded 256 ways by the first hash byte; each shard is an
// open-addressing (linear probing, backward-shift deletion) array of 32-byte
// slots under its own RWMutex, so readers on different cores rarely meet and a
// growing shard pauses only its own 1/256th of the keys. Probe sequences
// cannot be lengthened from outside: keys are hashes of tokens the authority
// minted with 128 random bits of jti, so a client cannot choose where they land.
type Index struct {
	shards [indexShards]shard
}

const (
	indexShards   = 256
	minShardSlots = 16
)

// slot states
const (
	slotEmpty uint8 = iota
	slotLive
	slotRevoked
)

type slot struct {
	k0, k1 uint64 // first 16 bytes of the hash
	ref    uint64 // the backend's row for the entry, 0 if none (see AddRef)
	exp    uint32 // unix seconds; the token is void from this second on
	state  uint8
}

type shard struct {
	mu    sync.RWMutex
	slots []slot
	n     int
	_     [40]byte // keep neighbouring shards' locks off one cache line
}

// NewIndex returns an empty index sized for about sizeHint entries, so that
// loading that many does not grow the table.
func NewIndex(sizeHint int) *Index {
	ix := &Index{}
	per := sizeHint / indexShards
	n := minShardSlots
	for n*3/4 < per {
		n *= 2
	}
	for i := range ix.shards {
		ix.shards[i].slots = make([]slot, n)
	}
	return ix
}

func split(h Hash) (k0, k1 uint64) {
	return binary.BigEndian.Uint64(h[0:8]), binary.BigEndian.Uint64(h[8:16])
}

func (ix *Index) shardOf(k0 uint64) *shard { return &ix.shards[k0>>56] }

// expSeconds rounds up to whole seconds so an entry never dies early, and
// clamps to the uint32 range (good until 2106).
func expSeconds(t time.Time) uint32 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	if s <= 0 {
		return 0
	}
	if s > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(s)
}

// nowSeconds is the whole second containing now; an entry with exp e is live
// while nowSeconds < e, i.e. strictly before its expiry.
func nowSeconds(t time.Time) uint32 {
	s := t.Unix()
	if s <= 0 {
		return 0
	}
	if s >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(s)
}

// Add records h as issued and live until exp. Adding a hash that is already
// revoked keeps it revoked: revocation is never undone by a late or repeated Add.
func (ix *Index) Add(h Hash, exp time.Time) { ix.put(h, expSeconds(exp), slotLive, 0) }

// AddRef is Add that also remembers where the backend keeps the entry
// (a row id), so reading the full record needs no index on disk.
func (ix *Index) AddRef(h Hash, exp time.Time, ref uint64) {
	ix.put(h, expSeconds(exp), slotLive, ref)
}

// Revoke records h as revoked until exp, whether or not it was seen before, so
// a revocation that overtakes its issuance is not lost.
func (ix *Index) Revoke(h Hash, exp time.Time) { ix.put(h, expSeconds(exp), slotRevoked, 0) }

func (ix *Index) put(h Hash, exp uint32, state uint8, ref uint64) {
	k0, k1 := split(h)
	s := ix.shardOf(k0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.find(k0, k1); ok {
		sl := &s.slots[i]
		if state == slotRevoked {
			sl.state = slotRevoked
		}
		if exp > sl.exp {
			sl.exp = exp
		}
		if sl.ref == 0 {
			sl.ref = ref
		}
		return
	}
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(len(s.slots) * 2)
	}
	s.insert(slot{k0: k0, k1: k1, ref: ref, exp: exp, state: state})
	s.n++
}

// Status reports what the index knows of h at now. An entry whose expiry has
// passed is Unknown even before Sweep forgets it. Callers that allow clock
// leeway on exp pass now minus the leeway.
func (ix *Index) Status(h Hash, now time.Time) Status {
	st, _ := ix.Lookup(h, now)
	return st
}

// Lookup is Status plus the entry's expiry (zero when Unknown).
func (ix *Index) Lookup(h Hash, now time.Time) (Status, time.Time) {
	st, exp, _ := ix.LookupRef(h, now)
	return st, exp
}

// LookupRef is Lookup plus the backend reference given to AddRef (0 if none).
func (ix *Index) LookupRef(h Hash, now time.Time) (Status, time.Time, uint64) {
	k0, k1 := split(h)
	s := ix.shardOf(k0)
	s.mu.RLock()
	i, ok := s.find(k0, k1)
	var sl slot
	if ok {
		sl = s.slots[i]
	}
	s.mu.RUnlock()
	if !ok || nowSeconds(now) >= sl.exp {
		return Unknown, time.Time{}, 0
	}
	exp := time.Unix(int64(sl.exp), 0)
	if sl.state == slotRevoked {
		return Revoked, exp, sl.ref
	}
	return Live, exp, sl.ref
}

// Len is the number of entries held, including expired ones not yet swept.
func (ix *Index) Len() int {
	n := 0
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.RLock()
		n += s.n
		s.mu.RUnlock()
	}
	return n
}

// Sweep forgets every entry expired at now and returns how many it dropped.
// It locks one shard at a time, so lookups elsewhere carry on.
func (ix *Index) Sweep(now time.Time) int {
	cut := nowSeconds(now)
	dropped := 0
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.Lock()
		dropped += s.sweep(cut)
		// Give memory back when a burst has passed.
		if len(s.slots) > minShardSlots && s.n*8 < len(s.slots) {
			n := len(s.slots)
			for n > minShardSlots && s.n*8 < n {
				n /= 2
			}
			s.resize(n)
		}
		s.mu.Unlock()
	}
	return dropped
}

func (s *shard) find(k0, k1 uint64) (int, bool) {
	mask := uint64(len(s.slots) - 1)
	for i := k0 & mask; ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.state == slotEmpty {
			return 0, false
		}
		if sl.k0 == k0 && sl.k1 == k1 {
			return int(i), true
		}
	}
}

// insert places a key known to be absent; the table must have a free slot.
func (s *shard) insert(e slot) {
	mask := uint64(len(s.slots) - 1)
	for i := e.k0 & mask; ; i = (i + 1) & mask {
		if s.slots[i].state == slotEmpty {
			s.slots[i] = e
			return
		}
	}
}

func (s *shard) resize(n int) {
	old := s.slots
	s.slots = make([]slot, n)
	for _, e := range old {
		if e.state != slotEmpty {
			s.insert(e)
		}
	}
}

// remove empties slot i and shifts later members of its probe run back, so
// lookups never need tombstones.
func (s *shard) remove(i uint64) {
	mask := uint64(len(s.slots) - 1)
	hole := i
	for j := (i + 1) & mask; s.slots[j].state != slotEmpty; j = (j + 1) & mask {
		home := s.slots[j].k0 & mask
		// Move j into the hole unless its home lies cyclically in (hole, j].
		if (j-home)&mask >= (j-hole)&mask {
			s.slots[hole] = s.slots[j]
			hole = j
		}
	}
	s.slots[hole] = slot{}
	s.n--
}

func (s *shard) sweep(cut uint32) int {
	dropped := 0
	// A removal may shift a later entry into i, so i is checked again; entries
	// shifted in from the wrapped start were already visited and kept.
	for i := 0; i < len(s.slots); {
		sl := &s.slots[i]
		if sl.state != slotEmpty && cut >= sl.exp {
			s.remove(uint64(i))
			dropped++
			continue
		}
		i++
	}
	return dropped
}
