// Package redis is a DPoP proof replay cache in Redis, shared by every
// gateway replica: a proof is remembered with SET NX and an expiry at the end
// of its iat window, so a proof used at one replica is refused at all others.
package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// KeyPrefix starts every key this cache writes.
const KeyPrefix = "custos:dpop:"

// Replay is a dpop.Replay in Redis.
type Replay struct {
	c      *goredis.Client
	prefix string
	now    func() time.Time
}

// Open connects to the Redis server at url (redis://host:port/db). prefix is
// put before KeyPrefix-less keys ("" : KeyPrefix); now is the clock expiries
// are computed from (nil: time.Now).
func Open(ctx context.Context, url, prefix string, now func() time.Time) (*Replay, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("bad redis url: %w", err)
	}
	opt.DialTimeout = time.Second
	opt.ReadTimeout = time.Second
	opt.WriteTimeout = time.Second
	opt.MaxRetries = 1
	c := goredis.NewClient(opt)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("failed to reach redis: %w", err)
	}
	if prefix == "" {
		prefix = KeyPrefix
	}
	if now == nil {
		now = time.Now
	}
	return &Replay{c: c, prefix: prefix, now: now}, nil
}

// Seen implements dpop.Replay: SET key NX with the time left until until.
// An error (Redis unreachable) refuses the proof.
func (r *Replay) Seen(ctx context.Context, key string, until time.Time) (bool, error) {
	ttl := until.Sub(r.now())
	if ttl < time.Second {
		ttl = time.Second
	}
	ok, err := r.c.SetNX(ctx, r.prefix+key, 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("dpop replay cache: %w", err)
	}
	return !ok, nil
}

// Ping reports whether Redis answers (for readiness checks).
func (r *Replay) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close closes the connection pool.
func (r *Replay) Close() error { return r.c.Close() }
