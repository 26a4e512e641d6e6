package authority

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/store/storetest"
)

// Client and admin credentials on PostgreSQL: add, authenticate, revoke
// everything a departed custodian held, reload.
func TestCredentialsPostgres(t *testing.T) {
	ctx := context.Background()
	db := storetest.Postgres(t)
	creds, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, err := creds.AddClient(ctx, "login", []string{"shop-api"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, keep, err := creds.AddClient(ctx, "batch", []string{"shop-api"}, "bob")
	if err != nil {
		t.Fatal(err)
	}
	_, adminTok, err := creds.AddAdmin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := creds.Client(sec); err != nil || c.Name != "login" || c.Audiences[0] != "shop-api" {
		t.Fatalf("client %+v, %v", c, err)
	}
	n, err := creds.RevokeHeldBy(ctx, "alice", "custos/offboarding", "left")
	if err != nil || n != 2 {
		t.Fatalf("revoked %d (%v), want client + admin = 2", n, err)
	}
	if _, err := creds.Client(sec); !errors.Is(err, ErrBadCredential) {
		t.Fatal("departed custodian's client secret still works")
	}
	if _, err := creds.Admin(adminTok); !errors.Is(err, ErrBadCredential) {
		t.Fatal("departed custodian's admin credential still works")
	}
	c2, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Client(sec); err == nil {
		t.Fatal("revoked client secret reloaded as live")
	}
	if _, err := c2.Client(keep); err != nil {
		t.Fatalf("unrelated client lost on reload: %v", err)
	}
}

// The connection of an offboarding revocation is terminated between its two
// statements: it fails with a clear error, no credential is revoked in the
// database, and every credential still works in memory (nothing half-done).
func TestRevokeHeldByPostgresConnectionLoss(t *testing.T) {
	ctx := context.Background()
	k := storetest.PostgresKillable(t)
	creds, err := OpenCredentials(ctx, k.DB, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, err := creds.AddClient(ctx, "login", []string{"shop-api"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, adminTok, err := creds.AddAdmin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	revoked := func() int {
		var n int
		if err := k.Admin.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM authority_clients WHERE revoked_at IS NOT NULL) +
			(SELECT COUNT(*) FROM authority_credentials WHERE revoked_at IS NOT NULL)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	k.Slow(t, "authority_credentials", "UPDATE", 3) // the second statement
	killed := k.TerminateSleeping(5 * time.Second)
	_, err = creds.RevokeHeldBy(ctx, "alice", "custos/offboarding", "left")
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if err == nil || !strings.Contains(err.Error(), "failed to revoke credentials of alice") {
		t.Fatalf("err %v, want a clear failure", err)
	}
	if n := revoked(); n != 0 {
		t.Fatalf("half-written: %d credentials revoked in the database", n)
	}
	if _, err := creds.Client(sec); err != nil {
		t.Fatalf("client dropped from memory though the revocation failed: %v", err)
	}
	if _, err := creds.Admin(adminTok); err != nil {
		t.Fatalf("admin dropped from memory though the revocation failed: %v", err)
	}
	// Retried once the connection is back, it completes.
	k.Unslow(t, "authority_credentials", "UPDATE")
	if n, err := creds.RevokeHeldBy(ctx, "alice", "custos/offboarding", "left"); err != nil || n != 2 {
		t.Fatalf("retry revoked %d, %v", n, err)
	}
	if n := revoked(); n != 2 {
		t.Fatalf("%d revoked after retry, want 2", n)
	}
}
