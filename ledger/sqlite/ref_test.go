package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/store"
)

// Through the ledger: records are read by the row id the index keeps, a
// revocation shows on the record, and both survive a restart, which rebuilds
// the ids from the table.
func TestLedgerReadsByRef(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	now := func() time.Time { return t0 }
	be, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(ctx, be, now)
	if err != nil {
		t.Fatal(err)
	}
	a, b := randomEntry(t0.Add(time.Hour)), randomEntry(t0.Add(time.Hour))
	b.Subject = "member-2"
	for _, e := range []ledger.Entry{a, b} {
		if err := l.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := l.Get(ctx, b.Hash); err != nil || got.Subject != "member-2" || got.Revoked {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if err := l.Revoke(ctx, a.Hash); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Get(ctx, a.Hash); err != nil || !got.Revoked || got.JTI != a.JTI {
		t.Fatalf("Get after revoke = %+v, %v", got, err)
	}
	if _, err := l.Get(ctx, ledger.HashToken("never issued")); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Get of a hash never issued = %v", err)
	}
	l.Close()
	be.Close()

	be, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	l, err = ledger.New(ctx, be, now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, err := l.Get(ctx, a.Hash); err != nil || !got.Revoked || got.Subject != a.Subject {
		t.Fatalf("after restart, revoked entry = %+v, %v", got, err)
	}
	if st, _ := l.Status(ctx, b.Hash); st != ledger.Live {
		t.Fatalf("after restart, live entry is %v", st)
	}
	if got, err := l.Get(ctx, b.Hash); err != nil || got.Subject != "member-2" {
		t.Fatalf("after restart, Get = %+v, %v", got, err)
	}
	// New records continue after the old ids.
	c := randomEntry(t0.Add(time.Hour))
	if err := l.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Get(ctx, c.Hash); err != nil || got.JTI != c.JTI {
		t.Fatalf("Get of a record put after restart = %+v, %v", got, err)
	}
}

// A ledger written by the previous schema (rows keyed by hash) is carried
// over on open, revocations included.
func TestMigratesHashKeyedLedger(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&store.DB{DB: db, Dialect: "sqlite"}).Migrate(ctx, "ledger", migrations[:1]); err != nil {
		t.Fatal(err)
	}
	old, revoked := randomEntry(t0.Add(time.Hour)), randomEntry(t0.Add(time.Hour))
	for i, e := range []ledger.Entry{old, revoked} {
		if _, err := db.Exec(`INSERT INTO ledger_tokens (`+columns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
			e.Hash[:], e.JTI, e.KID, e.Subject, e.Audience, e.Client, e.Session, e.ClientIP, e.IssuedAt.Unix(), e.ExpiresAt.Unix(), i); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	be, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	l, err := ledger.New(ctx, be, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, err := l.Get(ctx, old.Hash); err != nil || got.JTI != old.JTI || got.Revoked {
		t.Fatalf("migrated entry = %+v, %v", got, err)
	}
	if st, _ := l.Status(ctx, revoked.Hash); st != ledger.Revoked {
		t.Fatalf("migrated revocation is %v", st)
	}
}
