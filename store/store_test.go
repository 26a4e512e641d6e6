package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/store/storetest"
)

// forEachDB runs fn against SQLite and against PostgreSQL (a fresh schema on the
// local server), so both backends pass the same behaviour test.
func forEachDB(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		fn(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db := storetest.Postgres(t)
		fn(t, db)
	})
}

func TestMigrate(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *store.DB) {
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
		// A failing step leaves nothing half-applied and the version unchanged.
		bad := append(steps, "CREATE TABLE t_b (id TEXT); CREATE TABLE t_a (id TEXT)")
		if err := db.Migrate(ctx, "t", bad); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("err %v, want failure naming version 3", err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO t_b(id) VALUES ($1)", "z"); err == nil {
			t.Fatal("a failed migration left table t_b behind")
		}
		var v int
		db.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations WHERE component=$1", "t").Scan(&v)
		if v != 2 {
			t.Fatalf("version %d after failed migration, want 2", v)
		}
	})
}

func TestOpenPostgresUnreachable(t *testing.T) {
	_, err := store.OpenPostgres(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err == nil || !strings.Contains(err.Error(), "failed to reach postgres") {
		t.Fatalf("err %v", err)
	}
}
