package authority

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/store/storetest"
)

// credentialBehaviour runs against one store shared by two registries, as
// two replicas share it: what one adds or revokes, the other sees.
func credentialBehaviour(t *testing.T, db *store.DB) {
	ctx := context.Background()
	r1, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	boot, bootTok, err := r1.AddAdmin(ctx, "bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	gw, gwTok, err := r1.Add(ctx, NewCredential{Name: "edge", Role: RoleGateway}, "admin")
	if err != nil {
		t.Fatal(err)
	}
	sc, scTok, err := r1.Add(ctx, NewCredential{Name: "okta", Role: RoleSCIM}, "admin")
	if err != nil || sc.Provider != "okta" {
		t.Fatalf("scim credential %+v %v", sc, err)
	}
	// Seen at the other registry at once, with role and actor.
	if cr, err := r2.Authenticate(ctx, gwTok); err != nil || cr.ID != gw.ID || cr.Role != RoleGateway || cr.Actor() != "credential:edge" {
		t.Fatalf("gateway credential at r2: %+v %v", cr, err)
	}
	if a, err := r2.Admin(bootTok); err != nil || a.StaffID != "bootstrap" || a.ID != boot.ID {
		t.Fatalf("admin at r2: %+v %v", a, err)
	}
	for name, tok := range map[string]string{"gateway": gwTok, "scim": scTok} {
		if _, err := r2.Admin(tok); !errors.Is(err, ErrBadCredential) {
			t.Fatalf("%s credential passes as admin", name)
		}
	}
	for name, tok := range map[string]string{
		"empty": "", "upper": strings.ToUpper(gwTok), "prefix": gwTok[:len(gwTok)-2], "suffix": gwTok + "x", "space": gwTok + " ",
	} {
		if _, err := r2.Authenticate(ctx, tok); !errors.Is(err, ErrBadCredential) || errors.Is(err, ErrRevoked) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Revoked at r1 (ID in upper case): refused at r2 within CacheTTL, and
	// reported as revoked, with the credential.
	if _, err := r1.Revoke(ctx, strings.ToUpper(gw.ID), "admin", "moved"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(CacheTTL + 100*time.Millisecond)
	for {
		cr, err := r2.Authenticate(ctx, gwTok)
		if errors.Is(err, ErrRevoked) && cr.ID == gw.ID && cr.RevokedBy == "admin" && cr.RevokeReason == "moved" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked credential still accepted at r2 after %s: %+v %v", CacheTTL, cr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := r2.Revoke(ctx, gw.ID, "admin", "again"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	// Never zero admins: the last one is refused, concurrently too.
	if _, err := r2.Revoke(ctx, boot.ID, "admin", "x"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("last admin revoked: %v", err)
	}
	a2, _, err := r2.AddAdmin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.CheckDeparture(ctx, "alice"); err != nil {
		t.Fatalf("alice may leave while bootstrap remains: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []string{boot.ID, a2.ID} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = []*Credentials{r1, r2}[i].Revoke(ctx, id, "admin", "race")
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), ErrLastAdmin) {
		t.Fatalf("concurrent revocation of the last two admins: %v, %v (want exactly one refused)", errs[0], errs[1])
	}
	left := "alice"
	if errs[1] == nil {
		left = "bootstrap"
	}
	if err := r1.CheckDeparture(ctx, left); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("departure of %s, last admin: %v", left, err)
	}
	// A client added at r1 authenticates at r2 at once; revoked there, it
	// is refused at r1 within CacheTTL.
	cl, sec, err := r1.AddClient(ctx, "login", []string{"shop-api"}, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := r2.Client(sec); err != nil || c.ID != cl.ID {
		t.Fatalf("client at r2: %+v %v", c, err)
	}
	if _, err := r1.Client(sec); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.RevokeHeldBy(ctx, "carol", "system:offboarding", "left"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(CacheTTL)
	if _, err := r1.Client(sec); !errors.Is(err, ErrBadCredential) {
		t.Fatal("client revoked at r2 still accepted at r1")
	}
	// Only hashes are stored.
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM authority_credentials WHERE token_hash IN ($1,$2,$3)`, bootTok, gwTok, scTok).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a token stored in clear: %d %v", n, err)
	}
	for name, nc := range map[string]NewCredential{
		"fail/role":          {Name: "x", Role: "root"},
		"fail/role_case":     {Name: "x", Role: "Admin"},
		"fail/name":          {Name: "a b", Role: RoleGateway},
		"fail/provider":      {Name: "x", Role: RoleGateway, Provider: "okta"},
		"fail/scim_provider": {Name: "x", Role: RoleSCIM, Provider: "bad provider"},
		"fail/person_ctl":    {Name: "x", Role: RoleAdmin, Person: "a\x00b"},
		"fail/live_name":     {Name: "okta", Role: RoleSCIM},
	} {
		if _, _, err := r1.Add(ctx, nc, "admin"); err == nil {
			t.Fatalf("%s: added", name)
		}
	}
}

func TestCredentialsSQLite(t *testing.T) {
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	credentialBehaviour(t, db)
}

func TestCredentialsSharedPostgres(t *testing.T) {
	credentialBehaviour(t, storetest.Postgres(t))
}

// Admin credentials made before credentials had roles carry over as admin
// credentials, revoked ones as revoked.
func TestAdminCredentialsMigrate(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, "authority", credentialMigrations[:1]); err != nil {
		t.Fatal(err)
	}
	live, dead := "ca_live", "ca_dead"
	db.ExecContext(ctx, `INSERT INTO authority_admins(id,staff_id,token_hash,created_at) VALUES ('ad_1','alice',$1,1)`, hashSecret(live))
	db.ExecContext(ctx, `INSERT INTO authority_admins(id,staff_id,token_hash,created_at,revoked_at) VALUES ('ad_2','bob',$1,1,2)`, hashSecret(dead))
	c, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := c.Admin(live); err != nil || a.StaffID != "alice" || a.ID != "ad_1" {
		t.Fatalf("migrated admin: %+v %v", a, err)
	}
	if cr, err := c.Authenticate(ctx, dead); !errors.Is(err, ErrRevoked) || cr.Person != "bob" {
		t.Fatalf("migrated revoked admin: %+v %v", cr, err)
	}
}

// The cost of authenticating a client secret: from the cache (what a busy
// client pays) and from the store (once per CacheTTL, or for each new secret).
func BenchmarkClientSecret(b *testing.B) {
	ctx := context.Background()
	db, err := store.OpenSQLite(filepath.Join(b.TempDir(), "c.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	c, err := OpenCredentials(ctx, db, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	_, sec, err := c.AddClient(ctx, "login", []string{"shop-api"}, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := c.Client(sec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sqlite", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c.forget()
			if _, err := c.Client(sec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
