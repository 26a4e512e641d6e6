// Package ledgertest is the behaviour every ledger.Backend must have: each
// backend's tests call Run with a function that opens a fresh, empty one.
//
// It checks what the gateway's provenance decision rests on: an acknowledged
// put is readable, an absent hash is ErrNotFound (never a guess), a
// revocation is never undone (not by a repeated put, not by a race with one,
// not when the revocation came first), and LoadLive yields every live record
// and no expired one. A backend that finds tokens by jti or subject (for
// containment) finds exactly the live, unrevoked ones, each once, and
// refuses a search that names neither.
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
		{"FindByJTI", testFindByJTI},
		{"FindBySubject", testFindBySubject},
		{"FindNeedsTarget", testFindNeedsTarget},
		{"FindSkipsExpired", testFindSkipsExpired},
		{"FindSkipsRevoked", testFindSkipsRevoked},
		{"FindKeepsValuesApart", testFindKeepsValuesApart},
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

// Finder is a backend that finds live tokens by jti or subject.
type Finder interface {
	Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error)
}

func finder(t *testing.T, b ledger.Backend) Finder {
	f, ok := b.(Finder)
	if !ok {
		t.Skip("backend cannot find tokens by jti or subject")
	}
	return f
}

// expectFound fails unless f finds exactly want (in any order, each once).
func expectFound(t *testing.T, f Finder, jti, sub string, want ...ledger.Entry) {
	t.Helper()
	got, err := f.Find(ctx, jti, sub, time.Now())
	if err != nil {
		t.Fatalf("Find(%q, %q): %v", jti, sub, err)
	}
	seen := map[ledger.Hash]int{}
	for _, h := range got {
		seen[h]++
	}
	for _, e := range want {
		if seen[e.Hash] != 1 {
			t.Fatalf("Find(%q, %q) returned %s %d times, want once (got %d hashes, want %d)", jti, sub, e.Hash, seen[e.Hash], len(got), len(want))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("Find(%q, %q) returned %d hashes, want %d", jti, sub, len(got), len(want))
	}
}

// subject returns a subject no other case uses.
func subject() string {
	var b [6]byte
	rand.Read(b[:])
	return "s-" + hex.EncodeToString(b[:])
}

func testFindByJTI(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	es := []ledger.Entry{Entry(hour()), Entry(hour()), Entry(hour())}
	put(t, b, es...)
	expectFound(t, f, es[1].JTI, "", es[1])
	expectFound(t, f, es[1].JTI, es[0].Subject, es[1]) // the jti wins over the subject
	expectFound(t, f, "never-issued", "")
}

func testFindBySubject(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	sub, other := subject(), subject()
	var mine []ledger.Entry
	for i := range 5 {
		e := Entry(hour().Add(time.Duration(i) * time.Minute))
		e.Subject = sub
		mine = append(mine, e)
	}
	o := Entry(hour())
	o.Subject = other
	put(t, b, mine...)
	put(t, b, o)
	put(t, b, mine[2]) // a retried put: still found once
	expectFound(t, f, "", sub, mine...)
	expectFound(t, f, "", other, o)
	expectFound(t, f, "", subject())
}

func testFindNeedsTarget(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	put(t, b, Entry(hour()), Entry(hour()))
	hs, err := f.Find(ctx, "", "", time.Now())
	if !errors.Is(err, ledger.ErrNoSearchTarget) || len(hs) != 0 {
		t.Fatalf("Find with no jti and no subject = %d hashes, %v; want ErrNoSearchTarget", len(hs), err)
	}
}

func testFindSkipsExpired(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	sub := subject()
	live, gone, soon := Entry(hour()), Entry(time.Now().Add(-time.Hour)), Entry(time.Now().Add(3*time.Second))
	live.Subject, gone.Subject, soon.Subject = sub, sub, sub
	put(t, b, live, gone, soon)
	expectFound(t, f, "", sub, live, soon)
	expectFound(t, f, gone.JTI, "")
	// Searched as of a time after soon's expiry: soon is not returned.
	got, err := f.Find(ctx, "", sub, soon.ExpiresAt)
	if err != nil || len(got) != 1 || got[0] != live.Hash {
		t.Fatalf("Find at the expiry of a token = %v, %v; want only the live one", got, err)
	}
}

func testFindSkipsRevoked(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	sub := subject()
	kept, revoked, early := Entry(hour()), Entry(hour()), Entry(hour())
	kept.Subject, revoked.Subject, early.Subject = sub, sub, sub
	put(t, b, kept, revoked)
	if err := b.Revoke(ctx, revoked.Hash, revoked.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	// Revoked before its put arrived.
	if err := b.Revoke(ctx, early.Hash, early.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	put(t, b, early)
	expectFound(t, f, "", sub, kept)
	expectFound(t, f, revoked.JTI, "")
	expectFound(t, f, early.JTI, "")
}

// A jti and a subject with the same value, a subject that is a prefix of
// another, and values with a backend's separators and wildcards find only
// their own tokens.
func testFindKeepsValuesApart(t *testing.T, b ledger.Backend) {
	f := finder(t, b)
	base := subject()
	byJTI, bySub, longer, odd := Entry(hour()), Entry(hour()), Entry(hour()), Entry(hour())
	byJTI.JTI, byJTI.Subject = base, base+"-x"
	bySub.Subject = base
	longer.Subject = base + "1"
	odd.JTI, odd.Subject = "custos:ledger:"+base, base+":*?[a]\\n{x}"
	put(t, b, byJTI, bySub, longer, odd)
	expectFound(t, f, base, "", byJTI)
	expectFound(t, f, "", base, bySub)
	expectFound(t, f, "", base+"1", longer)
	expectFound(t, f, "", odd.Subject, odd)
	expectFound(t, f, odd.JTI, "", odd)
	expectFound(t, f, "", base+":*")
	expectFound(t, f, "", base+"*")
}
