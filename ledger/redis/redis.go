// Package redis is the issuance ledger's scale-out backend: one Redis key per
// issued token, under its hash, expiring with the token, shared by every
// authority replica and gateway, on one Redis (Backend) or sharded by token
// hash over several (Sharded).
//
// Writes are pipelined in MULTI/EXEC transactions, so a batch is all there or
// not at all, each record with its entries in the jti and subject indexes
// that containment searches (Find). Durability is Redis's: run it with
// appendonly yes and appendfsync always (or everysec, accepting a second of
// loss) when the ledger must survive a Redis crash. It needs Redis 7.0 or
// newer, not Redis Cluster.
package redis

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/ledger"
)

// Prefix of every record's key (custos:ledger:<hex hash>).
const Prefix = "custos:ledger:"

// Prefixes of the index keys: one sorted set per jti and per subject, whose
// members are the raw 32-byte token hashes scored by their expiry (unix
// seconds). The jti or subject follows the prefix as it is: the prefix is
// fixed and the value is the whole rest of the key, so two values never
// share a key, and no value reaches a record's key (Prefix differs from
// both at its 14th byte, ':' against '-', so the SCAN of LoadLive never
// sees an index key either). Redis keys are binary safe and sent
// length-prefixed, so no byte of a value can end one. Values are bounded
// where they enter (token.MaxSubjectBytes for subjects, the provider
// records' field bound, random jtis of the authority's own). An empty jti
// or subject is not indexed.
const (
	JTIPrefix     = "custos:ledger-jti:"
	SubjectPrefix = "custos:ledger-sub:"
)

// Backend is a ledger.Backend on Redis.
type Backend struct {
	c    *goredis.Client
	errs *errorHook
}

// errorHook counts commands that failed (a missing key is not a failure).
type errorHook struct{ n atomic.Uint64 }

func (h *errorHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.n.Add(1)
		}
		return c, err
	}
}

func (h *errorHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && !errors.Is(err, goredis.Nil) && !connSetup(cmd) {
			h.n.Add(1)
		}
		return err
	}
}

func (h *errorHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && !errors.Is(err, goredis.Nil) && !(len(cmds) > 0 && connSetup(cmds[0])) {
			h.n.Add(1)
		}
		return err
	}
}

// connSetup is a command the client sends when it connects, whose refusal by
// an older server it ignores (CLIENT SETINFO, HELLO).
func connSetup(c goredis.Cmder) bool {
	n := c.Name()
	return n == "client" || n == "hello"
}

// Errors is how many Redis commands, pipelines and dials have failed since
// Open (for metrics).
func (b *Backend) Errors() uint64 { return b.errs.n.Load() }

var _ ledger.SharedBackend = (*Backend)(nil)

// Open connects to the Redis server at url (redis://host:port/db). It
// refuses a server older than Redis 7.0, which the indexes' TTLs need, and
// a Redis Cluster node, and a Redis that is a shard of a sharded ledger
// (OpenSharded), whose tokens it would answer for alone.
func Open(ctx context.Context, url string) (*Backend, error) {
	b, err := open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := b.checkUnsharded(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func open(ctx context.Context, url string) (*Backend, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("bad redis url: %w", err)
	}
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.MaxRetries = 1
	c := goredis.NewClient(opt)
	h := &errorHook{}
	c.AddHook(h)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("failed to reach redis: %w", err)
	}
	// One section a command: INFO with several sections is Redis 7.0's.
	info, err := c.Info(ctx, "server").Result()
	if err == nil {
		var cl string
		cl, err = c.Info(ctx, "cluster").Result()
		info += cl
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("failed to read the redis server's version: %w", err)
	}
	if err := checkVersion(info); err != nil {
		c.Close()
		return nil, err
	}
	return &Backend{c: c, errs: h}, nil
}

// Close closes the connection pool.
func (b *Backend) Close() error { return b.c.Close() }

// Ping reports whether Redis answers (for readiness checks).
func (b *Backend) Ping(ctx context.Context) error { return b.c.Ping(ctx).Err() }

// SharedWithPeers is true: other replicas write here too.
func (b *Backend) SharedWithPeers() bool { return true }

// record is the stored value; the token itself is never stored.
type record struct {
	JTI      string `json:"jti"`
	KID      string `json:"kid"`
	Sub      string `json:"sub"`
	Aud      string `json:"aud"`
	Client   string `json:"cid"`
	Session  string `json:"sid,omitempty"`
	ClientIP string `json:"ip,omitempty"`
	IAT      int64  `json:"iat"`
	EXP      int64  `json:"exp"`
	Revoked  bool   `json:"r,omitempty"`
}

func key(h ledger.Hash) string { return Prefix + h.String() }

func encode(e ledger.Entry) ([]byte, error) {
	return json.Marshal(record{JTI: e.JTI, KID: e.KID, Sub: e.Subject, Aud: e.Audience, Client: e.Client,
		Session: e.Session, ClientIP: e.ClientIP, IAT: e.IssuedAt.Unix(), EXP: e.ExpiresAt.Unix(), Revoked: e.Revoked})
}

func decode(h ledger.Hash, b []byte) (ledger.Entry, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return ledger.Entry{}, fmt.Errorf("corrupt ledger record %s: %w", h, err)
	}
	return ledger.Entry{Hash: h, JTI: r.JTI, KID: r.KID, Subject: r.Sub, Audience: r.Aud, Client: r.Client,
		Session: r.Session, ClientIP: r.ClientIP, IssuedAt: time.Unix(r.IAT, 0).UTC(),
		ExpiresAt: time.Unix(r.EXP, 0).UTC(), Revoked: r.Revoked}, nil
}

// pruneBefore is the score at and below which index members are deleted
// as of now: tokens expired for longer than their records are kept (ttl),
// so a replica whose clock runs up to that far ahead never prunes the entry
// of a token that is still live elsewhere.
func pruneBefore(now time.Time) string {
	return strconv.FormatInt(now.Add(-recordKeptPastExpiry).Unix(), 10)
}

func jtiKey(jti string) string { return JTIPrefix + jti }
func subKey(sub string) string { return SubjectPrefix + sub }

// PutBatch writes entries in one MULTI/EXEC, each expiring with its token,
// and in the same transaction adds each hash to its jti's and its subject's
// index, so a record never exists without its index entries. An index key
// expires with its longest-lived member: EXPIRE NX gives a new key its TTL,
// EXPIRE GT only ever lengthens it. A subject's expired members are pruned.
// A hash that already has a record keeps it (SET NX): a retried put, or one
// that arrives after a revocation of the same token, never undoes the
// revocation.
func (b *Backend) PutBatch(ctx context.Context, entries []ledger.Entry) error {
	cmds, err := b.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		longest := map[string]time.Duration{} // index key → TTL of its longest member here
		subjects := map[string]bool{}
		index := func(k string, e ledger.Entry, d time.Duration) {
			p.ZAdd(ctx, k, goredis.Z{Score: float64(e.ExpiresAt.Unix()), Member: string(e.Hash[:])})
			longest[k] = max(longest[k], d)
		}
		for _, e := range entries {
			v, err := encode(e)
			if err != nil {
				return err
			}
			d := ttl(e.ExpiresAt)
			p.SetArgs(ctx, key(e.Hash), v, goredis.SetArgs{Mode: "NX", TTL: d})
			if e.JTI != "" {
				index(jtiKey(e.JTI), e, d)
			}
			if e.Subject != "" {
				index(subKey(e.Subject), e, d)
				subjects[subKey(e.Subject)] = true
			}
		}
		// A subject's key lives as long as the subject keeps logging in
		// (EXPIRE GT), so its expired members go here; a jti's key holds one
		// token (or a provider record's two) and goes with its TTL.
		before := pruneBefore(time.Now())
		for k := range subjects {
			p.ZRemRangeByScore(ctx, k, "-inf", before)
		}
		for k, d := range longest {
			p.ExpireNX(ctx, k, d)
			p.ExpireGT(ctx, k, d)
		}
		return nil
	})
	if !errors.Is(err, goredis.Nil) {
		return err
	}
	for _, c := range cmds { // Nil: NX found a record and kept it
		if err := c.Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
	}
	return nil
}

// recordKeptPastExpiry is how long a record outlives its token, for
// forensics lookups.
const recordKeptPastExpiry = time.Minute

func ttl(exp time.Time) time.Duration {
	d := time.Until(exp) + recordKeptPastExpiry
	if d < time.Second {
		d = time.Second
	}
	return d
}

// revokeTries bounds how often Revoke retries when a concurrent write to the
// same key aborts its transaction.
const revokeTries = 32

// Revoke marks h revoked, keeping its record, or writes a revocation record
// valid until exp when h has none yet (the put may still be on its way from
// another replica), so that a revocation is never lost. The read and the
// write are one optimistic transaction (WATCH): a put racing it makes it
// start again.
func (b *Backend) Revoke(ctx context.Context, h ledger.Hash, exp time.Time) error {
	k := key(h)
	for range revokeTries {
		err := b.c.Watch(ctx, func(tx *goredis.Tx) error {
			e, err := get(ctx, tx, h)
			switch {
			case errors.Is(err, ledger.ErrNotFound):
				e = ledger.Entry{Hash: h, ExpiresAt: exp.UTC().Truncate(time.Second)}
			case err != nil:
				return err
			}
			e.Revoked = true
			v, err := encode(e)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
				p.Set(ctx, k, v, ttl(e.ExpiresAt.Add(time.Second)))
				return nil
			})
			return err
		}, k)
		if !errors.Is(err, goredis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("failed to revoke %s: the record kept changing", h)
}

// Get reads h's record.
func (b *Backend) Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error) {
	return get(ctx, b.c, h)
}

func get(ctx context.Context, c goredis.Cmdable, h ledger.Hash) (ledger.Entry, error) {
	v, err := c.Get(ctx, key(h)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, err
	}
	return decode(h, v)
}

// LoadLive scans every live record.
func (b *Backend) LoadLive(ctx context.Context, now time.Time, fn func(ledger.Entry) error) error {
	it := b.c.Scan(ctx, 0, Prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		vals, err := b.c.MGet(ctx, batch...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired between SCAN and MGET
			}
			raw, err := hex.DecodeString(batch[i][len(Prefix):])
			if err != nil || len(raw) != len(ledger.Hash{}) {
				continue // not ours
			}
			var h ledger.Hash
			copy(h[:], raw)
			e, err := decode(h, []byte(s))
			if err != nil {
				return err
			}
			if now.Before(e.ExpiresAt) {
				if err := fn(e); err != nil {
					return err
				}
			}
		}
		batch = batch[:0]
		return nil
	}
	for it.Next(ctx) {
		batch = append(batch, it.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	return flush()
}

var _ interface {
	Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error)
} = (*Backend)(nil)

// Find returns the hashes of live tokens (not expired, not revoked) with
// the given jti, or for subject sub when jti is empty, each once; a search
// naming neither is refused (ledger.ErrNoSearchTarget). It reads the index
// members scored after now, pruning those expired for longer than a record
// is kept, and keeps those whose record is there, live, unrevoked and of
// that jti or subject.
func (b *Backend) Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error) {
	var k string
	match := func(e ledger.Entry) bool { return e.JTI == jti }
	switch {
	case jti != "":
		k = jtiKey(jti)
	case sub != "":
		k = subKey(sub)
		match = func(e ledger.Entry) bool { return e.Subject == sub }
	default:
		return nil, ledger.ErrNoSearchTarget
	}
	at := strconv.FormatInt(now.Unix(), 10)
	var members *goredis.StringSliceCmd
	if _, err := b.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, k, "-inf", pruneBefore(now))
		members = p.ZRangeByScore(ctx, k, &goredis.ZRangeBy{Min: "(" + at, Max: "+inf"})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("failed to search the ledger: %w", err)
	}
	var hs []ledger.Hash
	for _, m := range members.Val() {
		var h ledger.Hash
		if len(m) != len(h) {
			return nil, fmt.Errorf("ledger index %q holds a %d-byte member", k, len(m))
		}
		copy(h[:], m)
		hs = append(hs, h)
	}
	var out []ledger.Hash
	for len(hs) > 0 {
		n := min(len(hs), 1000)
		keys := make([]string, n)
		for i, h := range hs[:n] {
			keys[i] = key(h)
		}
		vals, err := b.c.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("failed to search the ledger: %w", err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // the record expired after the index was read
			}
			e, err := decode(hs[i], []byte(s))
			if err != nil {
				return nil, err
			}
			if !e.Revoked && now.Before(e.ExpiresAt) && match(e) {
				out = append(out, e.Hash)
			}
		}
		hs = hs[n:]
	}
	return out, nil
}

// DeleteExpired is Redis's job (key TTLs); it deletes nothing.
func (b *Backend) DeleteExpired(ctx context.Context, now time.Time) (int, error) { return 0, nil }
