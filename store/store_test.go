package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/store/storetest"
)

// Both backends pass the same behaviour suite.
func TestBackends(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		storetest.Run(t, func(t testing.TB) *store.DB {
			db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		})
	})
	t.Run("postgres", func(t *testing.T) { storetest.Run(t, storetest.Postgres) })
}

func TestOpenPostgresUnreachable(t *testing.T) {
	_, err := store.OpenPostgres(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err == nil || !strings.Contains(err.Error(), "failed to reach postgres") {
		t.Fatalf("err %v", err)
	}
}
