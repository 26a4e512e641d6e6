package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/ledger"
)

// ShardKey is the marker each shard of a sharded ledger keeps: "i/N", its
// place in the list of N shards, written on first open. A token's shard is
// fixed by its hash, the shard count and their order, so Open refuses a
// list whose count or order disagrees with a marker.
const ShardKey = "custos:ledger-shard"

// Sharded is a ledger.Backend over several Redis primaries (client-side
// sharding): a token's record and its own jti and subject index entries
// live on the shard its hash picks, so each put is one MULTI/EXEC on one
// shard and a record never exists without its index entries there. A
// lookup or revocation goes to the hash's shard; a search asks every shard.
type Sharded struct {
	shards []*Backend
}

var (
	_ ledger.SharedBackend = (*Sharded)(nil)
	_ interface {
		Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error)
	} = (*Sharded)(nil)
)

// OpenSharded connects to every Redis in urls (each as Open does, so each
// must be a standalone Redis 7.0 or newer) and checks each one's shard
// marker: a shard without one gets "i/N" unless it already holds ledger
// records (a single-Redis ledger's, or a shard's whose marker was lost),
// which is refused, as is a marker that disagrees with the shard's place
// in urls. Changing the number or order of shards moves tokens between
// them: that needs a migration, never a restart with another list.
func OpenSharded(ctx context.Context, urls []string) (*Sharded, error) {
	if len(urls) < 2 {
		return nil, fmt.Errorf("a sharded ledger needs at least two redis urls, got %d", len(urls))
	}
	s := &Sharded{}
	for i, u := range urls {
		b, err := open(ctx, u)
		if err == nil {
			err = b.claimShard(ctx, i, len(urls))
			if err != nil {
				b.Close()
			}
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("ledger shard %d of %d: %w", i, len(urls), err)
		}
		s.shards = append(s.shards, b)
	}
	return s, nil
}

// ErrReshard is a shard list that disagrees with the shards' markers.
var ErrReshard = errors.New("the redis ledger's shard list changed: tokens would be looked up on the wrong shard; resharding needs a migration of the records, not a new list")

// claimShard writes the marker "i/n" unless the shard has one, then checks
// that the shard's marker is "i/n".
func (b *Backend) claimShard(ctx context.Context, i, n int) error {
	want := strconv.Itoa(i) + "/" + strconv.Itoa(n)
	got, err := b.c.Get(ctx, ShardKey).Result()
	if errors.Is(err, goredis.Nil) {
		if has, err := b.holdsRecords(ctx); err != nil {
			return err
		} else if has {
			return fmt.Errorf("%w (the redis holds ledger records but no shard marker: it was a single-redis ledger or lost its marker)", ErrReshard)
		}
		if err := b.c.SetNX(ctx, ShardKey, want, 0).Err(); err != nil {
			return fmt.Errorf("failed to write the shard marker: %w", err)
		}
		got, err = b.c.Get(ctx, ShardKey).Result()
	}
	if err != nil {
		return fmt.Errorf("failed to read the shard marker: %w", err)
	}
	if got != want {
		return fmt.Errorf("%w (this redis is shard %q, listed as %q)", ErrReshard, got, want)
	}
	return nil
}

// checkUnsharded refuses a Redis that is a shard of a sharded ledger as a
// single-Redis ledger. It only reads, so a single Redis's keys stay as
// they were.
func (b *Backend) checkUnsharded(ctx context.Context) error {
	got, err := b.c.Get(ctx, ShardKey).Result()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("failed to read the shard marker: %w", err)
	}
	return fmt.Errorf("%w (this redis is shard %q of a sharded ledger, listed alone)", ErrReshard, got)
}

// holdsRecords reports whether any ledger key (record or index) is there.
func (b *Backend) holdsRecords(ctx context.Context) (bool, error) {
	it := b.c.Scan(ctx, 0, "custos:ledger*", 1000).Iterator()
	for it.Next(ctx) {
		if k := it.Val(); strings.HasPrefix(k, Prefix) || strings.HasPrefix(k, JTIPrefix) || strings.HasPrefix(k, SubjectPrefix) {
			return true, nil
		}
	}
	if err := it.Err(); err != nil {
		return false, fmt.Errorf("failed to look for ledger records: %w", err)
	}
	return false, nil
}

// Shards is how many shards there are.
func (s *Sharded) Shards() int { return len(s.shards) }

// ShardOf is the index of the shard that holds h: the hash's first eight
// bytes (SHA-256, so uniform) modulo the shard count.
func (s *Sharded) ShardOf(h ledger.Hash) int {
	return int(binary.BigEndian.Uint64(h[:8]) % uint64(len(s.shards)))
}

func (s *Sharded) shard(h ledger.Hash) *Backend { return s.shards[s.ShardOf(h)] }

// Close closes every shard's connection pool.
func (s *Sharded) Close() error {
	var errs []error
	for _, b := range s.shards {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// Ping reports whether every shard answers: with one down, a share of the
// tokens can be neither issued nor checked.
func (s *Sharded) Ping(ctx context.Context) error {
	return s.each(func(i int, b *Backend) error {
		if err := b.Ping(ctx); err != nil {
			return fmt.Errorf("ledger shard %d: %w", i, err)
		}
		return nil
	})
}

// Errors is how many Redis commands, pipelines and dials have failed on
// any shard since Open (for metrics).
func (s *Sharded) Errors() uint64 {
	var n uint64
	for _, b := range s.shards {
		n += b.Errors()
	}
	return n
}

// SharedWithPeers is true: other replicas write here too.
func (s *Sharded) SharedWithPeers() bool { return true }

// each runs fn on every shard concurrently and joins their errors.
func (s *Sharded) each(fn func(i int, b *Backend) error) error {
	errs := make([]error, len(s.shards))
	var wg sync.WaitGroup
	for i, b := range s.shards {
		wg.Go(func() { errs[i] = fn(i, b) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PutBatch writes each entry with its index entries on its hash's shard,
// one MULTI/EXEC per shard, the shards concurrently. Each shard's part is
// atomic; the batch as a whole is not: when some shards' parts failed and
// others' were stored, the error is a *ledger.PartialPutError naming the
// failed entries, so the ledger hands out the stored ones' tokens and a
// shard that is down stops only the issuance of tokens that fall on it.
func (s *Sharded) PutBatch(ctx context.Context, entries []ledger.Entry) error {
	parts := make([][]ledger.Entry, len(s.shards))
	for _, e := range entries {
		i := s.ShardOf(e.Hash)
		parts[i] = append(parts[i], e)
	}
	failed := make([]bool, len(s.shards))
	err := s.each(func(i int, b *Backend) error {
		if len(parts[i]) == 0 {
			return nil
		}
		if err := b.PutBatch(ctx, parts[i]); err != nil {
			failed[i] = true
			return fmt.Errorf("ledger shard %d: %w", i, err)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	for i, f := range failed {
		if !f && len(parts[i]) > 0 { // a shard stored its part
			return &ledger.PartialPutError{Err: err, Failed: func(h ledger.Hash) bool { return failed[s.ShardOf(h)] }}
		}
	}
	return err
}

// Revoke marks h revoked on its shard (see Backend.Revoke).
func (s *Sharded) Revoke(ctx context.Context, h ledger.Hash, exp time.Time) error {
	return s.shard(h).Revoke(ctx, h, exp)
}

// Get reads h's record from its shard. A shard that cannot be reached is
// an error, never ErrNotFound.
func (s *Sharded) Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error) {
	return s.shard(h).Get(ctx, h)
}

// LoadLive scans every live record, one shard after the other.
func (s *Sharded) LoadLive(ctx context.Context, now time.Time, fn func(ledger.Entry) error) error {
	for i, b := range s.shards {
		if err := b.LoadLive(ctx, now, fn); err != nil {
			return fmt.Errorf("ledger shard %d: %w", i, err)
		}
	}
	return nil
}

// Find asks every shard concurrently (see Backend.Find) and merges their
// answers. A shard that fails fails the search: a partial answer would
// leave some of a subject's tokens unrevoked while reporting success.
func (s *Sharded) Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error) {
	if jti == "" && sub == "" {
		return nil, ledger.ErrNoSearchTarget
	}
	found := make([][]ledger.Hash, len(s.shards))
	if err := s.each(func(i int, b *Backend) error {
		hs, err := b.Find(ctx, jti, sub, now)
		if err != nil {
			return fmt.Errorf("ledger shard %d: %w", i, err)
		}
		found[i] = hs
		return nil
	}); err != nil {
		return nil, err
	}
	var out []ledger.Hash
	for _, hs := range found {
		out = append(out, hs...)
	}
	return out, nil
}

// DeleteExpired is Redis's job (key TTLs); it deletes nothing.
func (s *Sharded) DeleteExpired(ctx context.Context, now time.Time) (int, error) { return 0, nil }
