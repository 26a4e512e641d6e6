package ledger

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Two replicas on one shared backend: a revocation made at the other one,
// while this replica's peer feed is behind, is honoured from the backend; once
// the feed is caught up the index answers alone, and Apply brings the other
// replica's records into the index and to subscribers (marked Peer).
func TestPeerFeedRevocationAtAnotherReplica(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	b.shared = true
	a1, a2 := newLedger(t, b), newLedger(t, b)
	var fresh atomic.Bool
	a1.SetPeerFeed(fresh.Load, nil)
	var mu sync.Mutex
	var heard []Record
	defer a1.Subscribe(func(r Record) { mu.Lock(); heard = append(heard, r); mu.Unlock() })()

	e := entry(1, t0.Add(time.Minute))
	if err := a1.Put(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := a2.Revoke(ctx, e.Hash); err != nil {
		t.Fatal(err)
	}
	// fail/behind: the index says live, the backend says revoked.
	if st, err := a1.Status(ctx, e.Hash); err != nil || st != Revoked {
		t.Fatalf("behind: Status = %v, %v; want revoked from the shared backend", st, err)
	}
	// A live hash is not answered locally while behind.
	e2 := entry(2, t0.Add(time.Minute))
	a1.Put(ctx, e2)
	if st, ok := a1.LocalStatus(e2.Hash); ok {
		t.Fatalf("behind: LocalStatus answered %v locally", st)
	}
	// With the backend down and the feed behind: unavailable, never live.
	b.fail = errors.New("connection refused")
	if st, err := a1.Status(ctx, e2.Hash); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("behind, backend down: Status = %v, %v; want ErrUnavailable", st, err)
	}
	b.fail = nil

	// Caught up: the index answers; a peer's revocation arrives by Apply.
	fresh.Store(true)
	if st, ok := a1.LocalStatus(e2.Hash); !ok || st != Live {
		t.Fatalf("caught up: LocalStatus = %v, %v", st, ok)
	}
	a1.Apply(Record{Hash: e2.Hash, Exp: e2.ExpiresAt, Revoked: true})
	if st, ok := a1.LocalStatus(e2.Hash); !ok || st != Revoked {
		t.Fatalf("after Apply: LocalStatus = %v, %v; want revoked", st, ok)
	}
	// A peer's issuance enters the index; repeats, own records, late Adds
	// and expired records change nothing and are not re-announced.
	e3 := entry(3, t0.Add(time.Minute))
	a1.Apply(Record{Hash: e3.Hash, Exp: e3.ExpiresAt})
	a1.Apply(Record{Hash: e3.Hash, Exp: e3.ExpiresAt})
	a1.Apply(Record{Hash: e2.Hash, Exp: e2.ExpiresAt})                // late issuance after revocation
	a1.Apply(Record{Hash: e2.Hash, Exp: e2.ExpiresAt, Revoked: true}) // repeat
	a1.Apply(Record{Hash: testHash(4), Exp: t0.Add(-2 * ExpiryGrace)})
	if st, ok := a1.LocalStatus(e2.Hash); st != Revoked || !ok {
		t.Fatalf("a late issuance record undid a revocation: %v", st)
	}
	if st, _ := a1.LocalStatus(e3.Hash); st != Live {
		t.Fatalf("peer issuance: %v", st)
	}
	if st, _ := a1.LocalStatus(testHash(4)); st != Unknown {
		t.Fatalf("expired peer record entered the index: %v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	var peer []Record
	for _, r := range heard {
		if r.Peer {
			peer = append(peer, r)
		}
	}
	if len(peer) != 2 || !peer[0].Revoked || peer[0].Hash != e2.Hash || peer[1].Revoked || peer[1].Hash != e3.Hash {
		t.Fatalf("subscribers heard peer records %+v; want e2 revoked, then e3 issued", peer)
	}
}

// A revocation that cannot be announced to the other replicas is not
// acknowledged: the caller hears ErrUnavailable (and may retry); the
// revocation itself is durable and enforced here.
func TestRevokeAnnounceFailure(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	b.shared = true
	l := newLedger(t, b)
	var announced []Record
	fail := errors.New("bus down")
	var err0 error
	l.SetPeerFeed(func() bool { return true }, func(ctx context.Context, r Record) error {
		announced = append(announced, r)
		return err0
	})
	e := entry(1, t0.Add(time.Minute))
	l.Put(ctx, e)
	err0 = fail
	if err := l.Revoke(ctx, e.Hash); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Revoke with the bus down = %v; want ErrUnavailable", err)
	}
	if st, _ := l.Status(ctx, e.Hash); st != Revoked {
		t.Fatalf("status after an unannounced revocation: %v", st)
	}
	err0 = nil
	if err := l.Revoke(ctx, e.Hash); err != nil {
		t.Fatalf("retried Revoke = %v", err)
	}
	if len(announced) != 2 || !announced[1].Revoked || announced[1].Hash != e.Hash {
		t.Fatalf("announced %+v", announced)
	}
}

// A replica behind its peers refuses to start a gateway stream (503
// ledger_unavailable) and ends open ones as soon as it falls behind.
func TestStreamEndsWhenBehind(t *testing.T) {
	b := newMem()
	b.shared = true
	l := newLedger(t, b)
	var fresh atomic.Bool
	l.SetPeerFeed(fresh.Load, nil)
	srv := httptest.NewServer(l.StreamHandler())
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("behind: stream answered %d", resp.StatusCode)
	}
	fresh.Store(true)
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("caught up: stream answered %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), `{"hb":`) {
		t.Fatalf("first line %q", sc.Text())
	}
	at := time.Now()
	fresh.Store(false)
	for sc.Scan() {
	}
	if d := time.Since(at); d > time.Second {
		t.Fatalf("stream ended %s after falling behind", d)
	}
}
