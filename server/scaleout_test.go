package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/store"
)

// The same server on the scale-out engines: PostgreSQL for the control plane
// and Redis for the ledger, chosen by configuration alone.
func TestScaleOutBackends(t *testing.T) {
	ctx := context.Background()
	pg := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	admin, err := store.OpenPostgres(ctx, pg)
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_srv_%d", rand.Uint32())
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer func() {
		admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	}()
	rurl := "redis://127.0.0.1:6379/9"
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: 9})
	defer rc.Close()
	testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(ctx).Err())

	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	cfg.Scale.Store = pg + "&search_path=" + schema
	cfg.Scale.Redis = rurl
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := server.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.DB.Dialect != "postgres" {
		t.Fatalf("store is %s", s.DB.Dialect)
	}
	c, secret, err := s.Creds.AddClient(ctx, "login", []string{config.DefaultAudience}, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = secret
	out, err := s.Authority.Issue(ctx, &c, authorityRequest("1001"))
	if err != nil {
		t.Fatal(err)
	}
	h := ledger.HashToken(out.AccessToken)
	defer rc.Del(ctx, "custos:ledger:"+h.String())
	if n, err := rc.Exists(ctx, "custos:ledger:"+h.String()).Result(); err != nil || n != 1 {
		t.Fatalf("issued token not in Redis: %d %v", n, err)
	}
	var kids int
	if err := admin.QueryRowContext(ctx, "SELECT count(*) FROM "+schema+".keys_keys").Scan(&kids); err != nil || kids == 0 {
		t.Fatalf("keys not in PostgreSQL: %d %v", kids, err)
	}
}
