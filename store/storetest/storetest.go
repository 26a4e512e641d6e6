// Package storetest gives tests a control-plane database on the local
// PostgreSQL server, isolated in a fresh schema, and [Run], the behaviour
// suite every backend passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/store"
)

// Postgres returns a DB on the local PostgreSQL server in a fresh
// schema dropped when t ends. CUSTOS_TEST_POSTGRES overrides the server DSN.
// It skips (or fails under CUSTOS_REQUIRE_SERVICES=1) when there is no server.
func Postgres(t testing.TB) *store.DB {
	t.Helper()
	dsn := serverDSN()
	ctx := context.Background()
	admin, err := store.OpenPostgres(ctx, dsn)
	testenv.Require(t, "PostgreSQL at "+dsn, err)
	schema := fmt.Sprintf("custos_test_%d", rand.Uint64()>>1)
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	admin.Close()
	sep := "?"
	for _, c := range dsn {
		if c == '?' {
			sep = "&"
		}
	}
	db, err := store.OpenPostgres(ctx, dsn+sep+"search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	})
	return db
}

func serverDSN() string {
	if dsn := os.Getenv("CUSTOS_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// PostgresTwin returns a second pool on the schema of db (from [Postgres]),
// closed when t ends: what another replica sharing the database holds.
func PostgresTwin(t testing.TB, db *store.DB) *store.DB {
	t.Helper()
	ctx := context.Background()
	var schema string
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	dsn := serverDSN()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	twin, err := store.OpenPostgres(ctx, dsn+sep+"search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { twin.Close() })
	return twin
}

// Killable is a database whose server connections a test can terminate in
// the middle of a transaction: DB is the pool under test, Admin a second
// pool on the same fresh schema that does the killing.
type Killable struct {
	DB, Admin *store.DB
	app       string
}

// PostgresKillable returns a Killable on a fresh schema (see Postgres).
func PostgresKillable(t testing.TB) *Killable {
	t.Helper()
	admin := Postgres(t)
	ctx := context.Background()
	var schema string
	if err := admin.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	app := fmt.Sprintf("custos_killable_%d", rand.Uint64()>>1)
	dsn := serverDSN()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	db, err := store.OpenPostgres(ctx, dsn+sep+"search_path="+schema+"&application_name="+app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &Killable{DB: db, Admin: admin, app: app}
}

// Slow makes each row of op ("INSERT", "UPDATE", "DELETE") on table wait
// for seconds, so a transaction can be caught with that statement running.
func (k *Killable) Slow(t testing.TB, table, op string, seconds int) {
	t.Helper()
	ctx := context.Background()
	fn := "custos_slow_" + strings.ToLower(table+"_"+op)
	for _, q := range []string{
		fmt.Sprintf(`CREATE FUNCTION %s() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(%d); RETURN NEW; END $$ LANGUAGE plpgsql`, fn, seconds),
		fmt.Sprintf(`CREATE TRIGGER %s BEFORE %s ON %s FOR EACH ROW EXECUTE FUNCTION %s()`, fn, op, table, fn),
	} {
		if _, err := k.Admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}

// Unslow removes what Slow added.
func (k *Killable) Unslow(t testing.TB, table, op string) {
	t.Helper()
	fn := "custos_slow_" + strings.ToLower(table+"_"+op)
	if _, err := k.Admin.ExecContext(context.Background(), fmt.Sprintf(`DROP TRIGGER %s ON %s`, fn, table)); err != nil {
		t.Fatal(err)
	}
}

// TerminateSleeping waits (up to timeout) for a connection of DB to be
// sleeping in a slowed statement and terminates it with
// pg_terminate_backend. The channel gets nil once it did.
func (k *Killable) TerminateSleeping(timeout time.Duration) <-chan error {
	out := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var n int
			err := k.Admin.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE application_name=$1 AND wait_event='PgSleep'`, k.app).Scan(&n)
			if err != nil || n > 0 {
				out <- err
				return
			}
		}
		out <- errors.New("storetest: no connection was seen in a slowed statement")
	}()
	return out
}
