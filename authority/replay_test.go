package authority

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/store/storetest"
)

// The one-time-use store (the jti of a client assertion, a subject token
// exchanged once, a token-endpoint DPoP proof) on SQLite and PostgreSQL,
// through two handles on one database as two authority replicas hold it.
func TestSeenAcrossReplicasSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custos.db")
	open := func() *store.DB {
		db, err := store.OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	testSeenAcrossReplicas(t, open(), open(), open())
}

func TestSeenAcrossReplicasPostgres(t *testing.T) {
	db := storetest.Postgres(t)
	testSeenAcrossReplicas(t, db, storetest.PostgresTwin(t, db), storetest.PostgresTwin(t, db))
}

// testSeenAcrossReplicas: an identifier used at one replica is refused at
// both, namespaces are apart, an expired record no longer counts, and of
// many concurrent claims of one identifier at both replicas exactly one
// wins. spare is a third handle, closed to show that a store that does not
// answer refuses.
func testSeenAcrossReplicas(t *testing.T, a, b, spare *store.DB) {
	ctx := context.Background()
	var replicas [2]*seenStore
	for i, db := range []*store.DB{a, b} {
		c, err := OpenCredentials(ctx, db, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		replicas[i] = c.seen
	}
	ra, rb := replicas[0], replicas[1]
	claim := func(s *seenStore, ns, id string, exp time.Time) bool {
		t.Helper()
		ok, err := s.first(ctx, ns, id, exp)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	later := time.Now().Add(time.Minute)
	if !claim(ra, "assertion\x00c1", "jti-1", later) {
		t.Fatal("first use refused")
	}
	if claim(rb, "assertion\x00c1", "jti-1", later) || claim(ra, "assertion\x00c1", "jti-1", later) {
		t.Fatal("an identifier used at one replica was accepted again")
	}
	if !claim(rb, "assertion\x00c2", "jti-1", later) || !claim(rb, "exchange\x00https://idp.example", "jti-1", later) {
		t.Fatal("the same jti of another client or namespace was refused")
	}
	// An identifier whose record has expired counts as new (its token can
	// no longer be presented anyway), and is then held again.
	if !claim(ra, "dpop", "p-1", time.Now().Add(-time.Second)) || !claim(rb, "dpop", "p-1", later) || claim(ra, "dpop", "p-1", later) {
		t.Fatal("expiry of a used identifier")
	}

	const rounds, perReplica = 20, 8
	for r := range rounds {
		id := fmt.Sprintf("race-%d", r)
		var wg sync.WaitGroup
		start := make(chan struct{})
		wins := make(chan int, 2*perReplica)
		errs := make(chan error, 2*perReplica)
		for i := range 2 * perReplica {
			s := replicas[i%2]
			wg.Go(func() {
				<-start
				ok, err := s.first(ctx, "assertion\x00c1", id, later)
				if err != nil {
					errs <- err
				}
				if ok {
					wins <- i % 2
				}
			})
		}
		close(start)
		wg.Wait()
		close(wins)
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", r, err)
		}
		if n := len(wins); n != 1 {
			t.Fatalf("round %d: %d of %d concurrent claims won, want exactly 1", r, n, 2*perReplica)
		}
	}

	// Fail closed: a store that does not answer is an error, never a first use.
	c, err := OpenCredentials(ctx, spare, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	spare.Close()
	if ok, err := c.seen.first(ctx, "assertion\x00c1", "jti-new", later); err == nil || ok {
		t.Fatalf("closed store: first %v, err %v; want an error", ok, err)
	}
}
