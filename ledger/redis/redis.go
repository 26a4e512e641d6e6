// Package redis is the issuance ledger's scale-out backend: one Redis key per
// issued token, under its hash, expiring with the token, shared by every
// authority replica and gateway.
//
// Writes are pipelined in MULTI/EXEC transactions, so a batch is all there or
// not at all. Durability is Redis's: run it with appendonly yes and
// appendfsync always (or everysec, accepting a second of loss) when the ledger
// must survive a Redis crash.
package redis

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/ledger"
)

// Prefix of every key custos writes.
const Prefix = "custos:ledger:"

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

// Open connects to the Redis server at url (redis://host:port/db).
func Open(ctx context.Context, url string) (*Backend, error) {
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

// PutBatch writes entries in one MULTI/EXEC, each expiring with its token.
// A hash that already has a record keeps it (SET NX): a retried put, or one
// that arrives after a revocation of the same token, never undoes the
// revocation.
func (b *Backend) PutBatch(ctx context.Context, entries []ledger.Entry) error {
	cmds, err := b.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		for _, e := range entries {
			v, err := encode(e)
			if err != nil {
				return err
			}
			p.SetArgs(ctx, key(e.Hash), v, goredis.SetArgs{Mode: "NX", TTL: ttl(e.ExpiresAt)})
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

func ttl(exp time.Time) time.Duration {
	d := time.Until(exp) + time.Minute // keep a little past expiry for forensics lookups
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

// DeleteExpired is Redis's job (key TTLs); it deletes nothing.
func (b *Backend) DeleteExpired(ctx context.Context, now time.Time) (int, error) { return 0, nil }
