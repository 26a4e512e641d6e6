// Package storetest gives tests a control-plane database on the local
// PostgreSQL server, isolated in a fresh schema.
package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/store"
)

// Postgres returns a DB on the local PostgreSQL server in a fresh
// schema dropped when t ends. CUSTOS_TEST_POSTGRES overrides the server DSN.
// It skips (or fails under CUSTOS_REQUIRE_SERVICES=1) when there is no server.
func Postgres(t testing.TB) *store.DB {
	t.Helper()
	dsn := os.Getenv("CUSTOS_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
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
