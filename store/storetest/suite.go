package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/store"
)

// Run is the behaviour every control-plane database backend passes: what the
// components rely on when they migrate their tables and write with
// $1-style placeholders. open returns a fresh, empty database, closed when
// its test ends.
func Run(t *testing.T, open func(t testing.TB) *store.DB) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, *store.DB)
	}{
		{"migrate", testMigrate},
		{"components_apart", testComponentsApart},
		{"placeholders", testPlaceholders},
		{"unique_refused", testUniqueRefused},
		{"rollback", testRollback},
		{"concurrent_writers", testConcurrentWriters},
		{"errors_counted", testErrorsCounted},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

func version(t *testing.T, db *store.DB, component string) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(context.Background(), "SELECT COALESCE(MAX(version),0) FROM schema_migrations WHERE component=$1", component).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Steps apply once, in order; a failing step leaves nothing half-applied
// and the version where it was.
func testMigrate(t *testing.T, db *store.DB) {
	ctx := context.Background()
	steps := []string{"CREATE TABLE t_a (id TEXT PRIMARY KEY, n BIGINT NOT NULL)", "ALTER TABLE t_a ADD COLUMN note TEXT"}
	if err := db.Migrate(ctx, "t", steps[:1]); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, "t", steps); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, "t", steps); err != nil {
		t.Fatalf("re-running applied migrations: %v", err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_a(id, n, note) VALUES ($1, $2, $3)", "x", 1, "y"); err != nil {
		t.Fatal(err)
	}
	bad := append(steps, "CREATE TABLE t_b (id TEXT); CREATE TABLE t_a (id TEXT)")
	if err := db.Migrate(ctx, "t", bad); err == nil || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("err %v, want failure naming version 3", err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_b(id) VALUES ($1)", "z"); err == nil {
		t.Fatal("a failed migration left table t_b behind")
	}
	if v := version(t, db, "t"); v != 2 {
		t.Fatalf("version %d after failed migration, want 2", v)
	}
}

// Each component has its own version: one's steps do not count for another.
func testComponentsApart(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.Migrate(ctx, "one", []string{"CREATE TABLE t_one (id TEXT)", "CREATE TABLE t_one2 (id TEXT)"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, "two", []string{"CREATE TABLE t_two (id TEXT)"}); err != nil {
		t.Fatal(err)
	}
	if a, b := version(t, db, "one"), version(t, db, "two"); a != 2 || b != 1 {
		t.Fatalf("versions one=%d two=%d, want 2 and 1", a, b)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_two(id) VALUES ($1)", "x"); err != nil {
		t.Fatalf("component two's table: %v", err)
	}
}

// $1-style placeholders bind text, integers beyond 32 bits and NULL, and
// give them back as written.
func testPlaceholders(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.Migrate(ctx, "p", []string{"CREATE TABLE t_p (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)"}); err != nil {
		t.Fatal(err)
	}
	const big = int64(1) << 53
	for _, row := range []struct {
		id   string
		n    int64
		note sql.NullString
	}{{"a'; DROP TABLE t_p; --", big, sql.NullString{String: "ünïcode ✓", Valid: true}}, {"b", -1, sql.NullString{}}} {
		if _, err := db.ExecContext(ctx, "INSERT INTO t_p(id, n, note) VALUES ($1, $2, $3)", row.id, row.n, row.note); err != nil {
			t.Fatal(err)
		}
		var n int64
		var note sql.NullString
		if err := db.QueryRowContext(ctx, "SELECT n, note FROM t_p WHERE id=$1", row.id).Scan(&n, &note); err != nil {
			t.Fatal(err)
		}
		if n != row.n || note != row.note {
			t.Fatalf("row %q: got %d %+v, want %d %+v", row.id, n, note, row.n, row.note)
		}
	}
	if err := db.QueryRowContext(ctx, "SELECT n FROM t_p WHERE id=$1", "missing").Scan(new(int64)); err != sql.ErrNoRows {
		t.Fatalf("missing row: %v, want sql.ErrNoRows", err)
	}
}

// A second row with the same primary key is refused and the first kept.
func testUniqueRefused(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.Migrate(ctx, "u", []string{"CREATE TABLE t_u (id TEXT PRIMARY KEY, v TEXT NOT NULL)"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_u(id, v) VALUES ($1, $2)", "k", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_u(id, v) VALUES ($1, $2)", "k", "second"); err == nil {
		t.Fatal("duplicate primary key accepted")
	}
	var v string
	if err := db.QueryRowContext(ctx, "SELECT v FROM t_u WHERE id=$1", "k").Scan(&v); err != nil || v != "first" {
		t.Fatalf("after the refused insert: %q %v", v, err)
	}
}

// A rolled-back transaction leaves nothing; a committed one is seen by
// every connection of the pool.
func testRollback(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.Migrate(ctx, "r", []string{"CREATE TABLE t_r (id TEXT PRIMARY KEY)"}); err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprint("commit-", commit)
		if _, err := tx.ExecContext(ctx, "INSERT INTO t_r(id) VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_r WHERE id=$1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: 0, true: 1}[commit]; n != want {
			t.Fatalf("commit=%v: %d rows, want %d", commit, n, want)
		}
	}
}

// Writers on several connections at once all land: components share the
// database.
func testConcurrentWriters(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if err := db.Migrate(ctx, "c", []string{"CREATE TABLE t_c (id TEXT PRIMARY KEY, w BIGINT NOT NULL)"}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := db.ExecContext(ctx, "INSERT INTO t_c(id, w) VALUES ($1, $2)", fmt.Sprintf("%d-%d", w, i), w); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_c").Scan(&n); err != nil || n != writers*each {
		t.Fatalf("%d rows (%v), want %d", n, err, writers*each)
	}
}

// Errors counts failed statements on PostgreSQL, for metrics, and a query
// without rows is no failure; SQLite reports 0.
func testErrorsCounted(t *testing.T, db *store.DB) {
	ctx := context.Background()
	before := db.Errors()
	db.QueryRowContext(ctx, "SELECT 1 WHERE 1=0").Scan(new(int))
	if db.Errors() != before {
		t.Fatalf("a query without rows counted as an error")
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t_missing(id) VALUES ($1)", "x"); err == nil {
		t.Fatal("insert into a missing table succeeded")
	}
	switch db.Dialect {
	case "postgres":
		if db.Errors() != before+1 {
			t.Fatalf("Errors %d after one failed statement, want %d", db.Errors(), before+1)
		}
	case "sqlite":
		if db.Errors() != 0 {
			t.Fatalf("Errors %d on SQLite, want 0", db.Errors())
		}
	default:
		t.Fatalf("unknown dialect %q", db.Dialect)
	}
}
