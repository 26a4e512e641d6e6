package redis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/ledgertest"
)

func openSharded(t *testing.T, urls ...string) *Sharded {
	t.Helper()
	s, err := OpenSharded(context.Background(), urls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// onShard returns a random entry whose hash picks shard i of s.
func onShard(t *testing.T, s *Sharded, i int, exp time.Time) ledger.Entry {
	t.Helper()
	for range 1000 {
		if e := entry(exp); s.ShardOf(e.Hash) == i {
			return e
		}
	}
	t.Fatalf("no random hash in 1000 picks shard %d", i)
	return ledger.Entry{}
}

func TestShardedConformance(t *testing.T) {
	a, b := startServer(t), startServer(t)
	ledgertest.Run(t, func(t *testing.T) ledger.Backend {
		s := openSharded(t, a.url(), b.url())
		t.Cleanup(func() {
			for _, sh := range s.shards {
				sh.c.FlushDB(context.Background())
			}
		})
		return s
	})
}

// A subject's tokens spread over both shards, each record with its own jti
// and subject index entries on its shard and nowhere else; Find by subject
// finds them all, Find by jti the one on either shard.
func TestShardedSpreadAndFind(t *testing.T) {
	a, b := startServer(t), startServer(t)
	s := openSharded(t, a.url(), b.url())
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	var es []ledger.Entry
	for range 64 {
		e := entry(exp)
		e.Subject = "spread:1"
		es = append(es, e)
	}
	if err := s.PutBatch(ctx, es); err != nil {
		t.Fatal(err)
	}
	per := make([]int, 2)
	for _, e := range es {
		i := s.ShardOf(e.Hash)
		per[i]++
		own, other := s.shards[i].c, s.shards[1-i].c
		if own.Exists(ctx, key(e.Hash)).Val() != 1 || other.Exists(ctx, key(e.Hash)).Val() != 0 {
			t.Fatalf("record %s not on shard %d alone", e.Hash, i)
		}
		if own.ZScore(ctx, jtiKey(e.JTI), string(e.Hash[:])).Err() != nil || other.Exists(ctx, jtiKey(e.JTI)).Val() != 0 {
			t.Fatalf("jti index entry of %s not on shard %d alone", e.Hash, i)
		}
		if own.ZScore(ctx, subKey(e.Subject), string(e.Hash[:])).Err() != nil || other.ZScore(ctx, subKey(e.Subject), string(e.Hash[:])).Err() == nil {
			t.Fatalf("subject index entry of %s not on shard %d alone", e.Hash, i)
		}
	}
	if per[0] < 16 || per[1] < 16 {
		t.Fatalf("64 tokens spread %v over two shards", per)
	}
	hs, err := s.Find(ctx, "", "spread:1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := map[ledger.Hash]bool{}
	for _, h := range hs {
		got[h] = true
	}
	if len(hs) != len(es) || len(got) != len(es) {
		t.Fatalf("Find by subject: %d hashes (%d distinct), want %d", len(hs), len(got), len(es))
	}
	for _, e := range es {
		if !got[e.Hash] {
			t.Fatalf("Find by subject missed %s on shard %d", e.Hash, s.ShardOf(e.Hash))
		}
	}
	for i := range 2 {
		e := onShard(t, s, i, exp)
		if err := s.PutBatch(ctx, []ledger.Entry{e}); err != nil {
			t.Fatal(err)
		}
		hs, err := s.Find(ctx, e.JTI, "", time.Now())
		if err != nil || len(hs) != 1 || hs[0] != e.Hash {
			t.Fatalf("Find by jti of a token on shard %d: %v %v", i, hs, err)
		}
	}
}

// The shards' markers fix the list: the same list opens again; a reordered,
// longer or shorter list is refused, and so is one shard alone as a
// single-Redis ledger, and a single-Redis ledger's Redis made a shard.
func TestShardMarkersRefuseAnotherList(t *testing.T) {
	a, b, c := startServer(t), startServer(t), startServer(t)
	ctx := context.Background()
	s, err := OpenSharded(ctx, []string{a.url(), b.url()})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, want := range []struct {
		srv  *server
		mark string
	}{{a, "0/2"}, {b, "1/2"}} {
		one, err := open(ctx, want.srv.url())
		if err != nil {
			t.Fatal(err)
		}
		if got := one.c.Get(ctx, ShardKey).Val(); got != want.mark {
			t.Fatalf("marker %q, want %q", got, want.mark)
		}
		one.Close()
	}
	s, err = OpenSharded(ctx, []string{a.url(), b.url()})
	if err != nil {
		t.Fatalf("the same list refused: %v", err)
	}
	s.Close()
	for name, urls := range map[string][]string{
		"reordered": {b.url(), a.url()},
		"longer":    {a.url(), b.url(), c.url()},
	} {
		if _, err := OpenSharded(ctx, urls); !errors.Is(err, ErrReshard) || !strings.Contains(err.Error(), "migration") {
			t.Fatalf("%s list: %v, want ErrReshard", name, err)
		}
	}
	if _, err := Open(ctx, a.url()); !errors.Is(err, ErrReshard) {
		t.Fatalf("a shard opened alone: %v, want ErrReshard", err)
	}

	// c was left without a marker (the longer list failed before it or
	// gave it one: start from a fresh server).
	d := startServer(t)
	single, err := Open(ctx, d.url())
	if err != nil {
		t.Fatal(err)
	}
	if err := single.PutBatch(ctx, []ledger.Entry{entry(time.Now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	if n := single.c.Exists(ctx, ShardKey).Val(); n != 0 {
		t.Fatal("a single-Redis ledger wrote a shard marker")
	}
	single.Close()
	e := startServer(t)
	if _, err := OpenSharded(ctx, []string{d.url(), e.url()}); !errors.Is(err, ErrReshard) {
		t.Fatalf("a single-Redis ledger's Redis taken as shard 0: %v, want ErrReshard", err)
	}
}

// One shard killed (-9): tokens whose hash picks it fail closed (a peer's
// token and a forged one alike answer ErrUnavailable, never Unknown from the
// other shard), puts there fail while puts batched with them on the live
// shard are stored and acknowledged, and a search fails rather than answer
// in part; tokens on the other shard are still answered, a forged one there
// Unknown. The shard comes back: its tokens are served again.
func TestShardDownFailsClosedAndRecovers(t *testing.T) {
	a, b := startServer(t), startServer(t)
	ctx := context.Background()
	s := openSharded(t, a.url(), b.url())
	l, err := ledger.New(ctx, s, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	exp := time.Now().Add(time.Hour)
	// Peers' tokens written straight to the shards: only a backend lookup finds them.
	peer0, peer1 := onShard(t, s, 0, exp), onShard(t, s, 1, exp)
	peer0.Subject, peer1.Subject = "down:1", "down:1"
	if err := s.PutBatch(ctx, []ledger.Entry{peer0, peer1}); err != nil {
		t.Fatal(err)
	}
	forged := func(i int) ledger.Hash {
		for n := range 1000 {
			if h := ledger.HashToken("forged-" + strconv.Itoa(n)); s.ShardOf(h) == i {
				return h
			}
		}
		t.Fatalf("no forged hash in 1000 picks shard %d", i)
		return ledger.Hash{}
	}

	b.stop()
	for name, h := range map[string]ledger.Hash{"peer's token": peer1.Hash, "forged token": forged(1)} {
		if st, err := l.Status(ctx, h); !errors.Is(err, ledger.ErrUnavailable) {
			t.Fatalf("%s on the dead shard: %v %v, want ErrUnavailable", name, st, err)
		}
	}
	if st, err := l.Status(ctx, peer0.Hash); err != nil || st != ledger.Live {
		t.Fatalf("peer's token on the live shard: %v %v", st, err)
	}
	if st, err := l.Status(ctx, forged(0)); err != nil || st != ledger.Unknown {
		t.Fatalf("forged token on the live shard: %v %v, want Unknown", st, err)
	}
	if hs, err := s.Find(ctx, "", "down:1", time.Now()); err == nil {
		t.Fatalf("search with a shard down answered %d hashes", len(hs))
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := l.Put(pctx, onShard(t, s, 1, exp)); err == nil {
		t.Fatal("put on the dead shard succeeded")
	}
	cancel()
	if err := l.Put(ctx, onShard(t, s, 0, exp)); err != nil {
		t.Fatalf("put on the live shard: %v", err)
	}
	if s.Ping(ctx) == nil {
		t.Fatal("Ping with a shard down")
	}
	// A batch over both shards stores the live shard's part and names the
	// dead one's entries; the ledger hands out only the stored ones.
	mixed := []ledger.Entry{onShard(t, s, 0, exp), onShard(t, s, 1, exp)}
	var partial *ledger.PartialPutError
	if err := s.PutBatch(ctx, mixed); !errors.As(err, &partial) || partial.Failed(mixed[0].Hash) || !partial.Failed(mixed[1].Hash) {
		t.Fatalf("batch over a live and a dead shard: %v, want a PartialPutError failing the dead shard's entry", err)
	}
	if _, err := s.Get(ctx, mixed[0].Hash); err != nil {
		t.Fatalf("the live shard's part of a partial batch: %v", err)
	}
	type result struct {
		e   ledger.Entry
		err error
	}
	results := make(chan result, 32)
	for i := range 32 {
		e := onShard(t, s, i%2, exp)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			results <- result{e, l.Put(pctx, e)}
		}()
	}
	for range 32 {
		r := <-results
		switch s.ShardOf(r.e.Hash) {
		case 0:
			if r.err != nil {
				t.Fatalf("put on the live shard, batched with the dead one's: %v", r.err)
			}
			if st, err := l.Status(ctx, r.e.Hash); err != nil || st != ledger.Live {
				t.Fatalf("token put on the live shard: %v %v", st, err)
			}
		case 1:
			if r.err == nil {
				t.Fatal("put on the dead shard acknowledged")
			}
			if st, err := l.Status(ctx, r.e.Hash); !errors.Is(err, ledger.ErrUnavailable) {
				t.Fatalf("token whose put failed on the dead shard: %v %v, want ErrUnavailable", st, err)
			}
		}
	}

	b.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := l.Status(ctx, peer1.Hash)
		if err == nil && st == ledger.Live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the shard's restart: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, err := l.Status(ctx, forged(1)); err != nil || st != ledger.Unknown {
		t.Fatalf("forged token on the restarted shard: %v %v, want Unknown", st, err)
	}
	hs, err := s.Find(ctx, "", "down:1", time.Now())
	if err != nil || len(hs) != 2 {
		t.Fatalf("search after recovery: %v %v, want both shards' tokens", hs, err)
	}
}
