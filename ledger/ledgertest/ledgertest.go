// Package ledgertest is the behaviour every ledger.Backend must have: each
// backend's tests call Run with a function that opens a fresh, empty one.
//
// It checks what the gateway's provenance decision rests on: an acknowledged
// put is readable, an absent hash is ErrNotFound (never a guess), a
// revocation is never undone (not by a repeated put, not by a race with one,
// not when the revocation came first), and LoadLive yields every live record
// and no expired one.
package ledgertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
)

// Opener opens a fresh, empty backend for t and closes it when t ends.
type Opener func(t *testing.T) ledger.Backend

// Run runs every case against backends opened by open. Times are relative
// to the wall clock, because some backends (Redis) expire records by it.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b ledger.Backend)
	}{
		{"PutGet", testPutGet},
		{"NotFound", testNotFound},
		{"RevokeKept", testRevokeKept},
		{"RevokeUnseen", testRevokeUnseen},
		{"RevokeRacesPut", testRevokeRacesPut},
		{"LoadLive", testLoadLive},
		{"DeleteExpiredKeepsLive", testDeleteExpiredKeepsLive},
		{"GetRef", testGetRef},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

var ctx = context.Background()

// Entry returns a random entry expiring at exp, with whole-second times (the
// resolution every backend keeps).
func Entry(exp time.Time) ledger.Entry {
	var b [32]byte
	rand.Read(b[:])
	return ledger.Entry{
		Hash: ledger.HashToken(hex.EncodeToString(b[:])), JTI: hex.EncodeToString(b[:16]), KID: "k1",
		Subject: "1001", Audience: "shop-api", Client: "login", Session: "s1", ClientIP: "192.0.2.1",
		IssuedAt: time.Now().UTC().Truncate(time.Second), ExpiresAt: exp.UTC().Truncate(time.Second),
	}
}

func hour() time.Time { return time.Now().Add(time.Hour) }

func put(t *testing.T, b ledger.Backend, es ...ledger.Entry) {
	t.Helper()
	if err := b.PutBatch(ctx, es); err != nil {
		t.Fatalf("PutBatch: %v", err)
	}
}

func get(t *testing.T, b ledger.Backend, h ledger.Hash) ledger.Entry {
	t.Helper()
	e, err := b.Get(ctx, h)
	if err != nil {
		t.Fatalf("Get %s: %v", h, err)
	}
	return e
}

// same compares two entries without Ref, which only some backends set.
func same(a, b ledger.Entry) bool {
	a.Ref, b.Ref = 0, 0
	return a == b
}

func testPutGet(t *testing.T, b ledger.Backend) {
	batch := make([]ledger.Entry, 700) // more than one statement or pipeline chunk
	for i := range batch {
		batch[i] = Entry(hour())
	}
	put(t, b, batch...)
	for _, i := range []int{0, 1, 350, 699} {
		if got := get(t, b, batch[i].Hash); !same(got, batch[i]) {
			t.Fatalf("Get = %+v, want %+v", got, batch[i])
		}
	}
}

func testNotFound(t *testing.T, b ledger.Backend) {
	put(t, b, Entry(hour()))
	for _, h := range []ledger.Hash{ledger.HashToken("never"), {}} {
		if _, err := b.Get(ctx, h); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("Get of an absent hash = %v, want ErrNotFound", err)
		}
	}
}

func testRevokeKept(t *testing.T, b ledger.Backend) {
	e := Entry(hour())
	put(t, b, e)
	if err := b.Revoke(ctx, e.Hash, e.ExpiresAt); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if !get(t, b, e.Hash).Revoked {
		t.Fatal("revocation not stored")
	}
	put(t, b, e) // a retried put must not undo it
	if got := get(t, b, e.Hash); !got.Revoked {
		t.Fatal("a repeated put undid the revocation")
	}
	if err := b.Revoke(ctx, e.Hash, e.ExpiresAt); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	if !get(t, b, e.Hash).Revoked {
		t.Fatal("a second revocation undid the first")
	}
}

func testRevokeUnseen(t *testing.T, b ledger.Backend) {
	e := Entry(hour())
	if err := b.Revoke(ctx, e.Hash, e.ExpiresAt); err != nil {
		t.Fatalf("Revoke of a hash not yet put: %v", err)
	}
	if !get(t, b, e.Hash).Revoked {
		t.Fatal("a revocation that came before the put was not stored")
	}
	put(t, b, e) // the put arriving later must not undo it
	if !get(t, b, e.Hash).Revoked {
		t.Fatal("a put after the revocation undid it")
	}
}

func testRevokeRacesPut(t *testing.T, b ledger.Backend) {
	es := make([]ledger.Entry, 50)
	for i := range es {
		es[i] = Entry(hour())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(es))
	for _, e := range es {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- b.PutBatch(ctx, []ledger.Entry{e}) }()
		go func() { defer wg.Done(); errs <- b.Revoke(ctx, e.Hash, e.ExpiresAt) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range es {
		if !get(t, b, e.Hash).Revoked {
			t.Fatalf("%s: put and revocation raced and the revocation was lost", e.Hash)
		}
	}
}

func testLoadLive(t *testing.T, b ledger.Backend) {
	live, revoked, gone := Entry(hour()), Entry(hour()), Entry(time.Now().Add(-time.Hour))
	put(t, b, live, revoked, gone)
	if err := b.Revoke(ctx, revoked.Hash, revoked.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	seen := map[ledger.Hash]bool{} // hash → revoked; a revoked record wins
	err := b.LoadLive(ctx, time.Now(), func(e ledger.Entry) error {
		seen[e.Hash] = seen[e.Hash] || e.Revoked
		return nil
	})
	if err != nil {
		t.Fatalf("LoadLive: %v", err)
	}
	if len(seen) != 2 {
		t.Fatalf("LoadLive yielded %d hashes, want 2 (live and revoked)", len(seen))
	}
	if rev, ok := seen[live.Hash]; !ok || rev {
		t.Fatalf("live entry: yielded %v, revoked %v", ok, rev)
	}
	if !seen[revoked.Hash] {
		t.Fatal("revoked entry not yielded as revoked")
	}
	if _, ok := seen[gone.Hash]; ok {
		t.Fatal("expired entry yielded as live")
	}
	stop := errors.New("stop")
	if err := b.LoadLive(ctx, time.Now(), func(ledger.Entry) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("LoadLive does not return its callback's error: %v", err)
	}
}

func testDeleteExpiredKeepsLive(t *testing.T, b ledger.Backend) {
	live, gone := Entry(hour()), Entry(time.Now().Add(-time.Hour))
	put(t, b, live, gone)
	if err := b.Revoke(ctx, live.Hash, live.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteExpired(ctx, time.Now()); err != nil {
		t.Fatalf("DeleteExpired: %v", err)
	}
	if got := get(t, b, live.Hash); !got.Revoked {
		t.Fatal("DeleteExpired removed a live revocation")
	}
}

func testGetRef(t *testing.T, b ledger.Backend) {
	rb, ok := b.(ledger.RefBackend)
	if !ok {
		t.Skip("backend keeps no refs")
	}
	es := []ledger.Entry{Entry(hour()), Entry(hour()), Entry(hour())}
	put(t, b, es...)
	for i, e := range es {
		if e.Ref == 0 || (i > 0 && e.Ref != es[i-1].Ref+1) {
			t.Fatalf("refs not handed out in order: %d after %d", e.Ref, es[max(i-1, 0)].Ref)
		}
		got, err := rb.GetRef(ctx, e.Ref, e.Hash)
		if err != nil || !same(got, e) {
			t.Fatalf("GetRef = %+v, %v; want %+v", got, err, e)
		}
	}
	if _, err := rb.GetRef(ctx, es[0].Ref, es[1].Hash); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("GetRef with another record's hash = %v, want ErrNotFound", err)
	}
	if _, err := rb.GetRef(ctx, es[2].Ref+1000, es[2].Hash); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("GetRef past the end = %v, want ErrNotFound", err)
	}
}
