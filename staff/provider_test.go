package staff

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-dev/custos/store"
)

// Identities and groups an identity provider created before providers were
// recorded are back-filled from the change log, so the provider keeps
// managing them; those made by an administrator belong to no provider.
func TestProviderBackfill(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, "staff", migrations[:1]); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range []struct{ id, actor string }{{"p1", "scim:okta"}, {"p2", "admin:alice"}, {"p3", "scim:azure"}} {
		exec(`INSERT INTO staff_people(id, user_name, user_name_key, kind, status, active, attrs, created_at, modified_at)
			VALUES ($1,$1,$1,'employee','active',1,'{}',1,1)`, p.id)
		exec(`INSERT INTO staff_changes(seq, at, actor, action, entity, detail) VALUES ($1,1,$2,'person.create',$3,'{}')`, i*2+1, p.actor, p.id)
		exec(`INSERT INTO staff_changes(seq, at, actor, action, entity, detail) VALUES ($1,1,'scim:other','person.update',$2,'{}')`, i*2+2, p.id)
	}
	exec(`INSERT INTO staff_groups(id, name, name_key, created_at, modified_at) VALUES ('g1','admins','admins',1,1)`)
	exec(`INSERT INTO staff_changes(seq, at, actor, action, entity, detail) VALUES (100,1,'scim:okta','group.create','g1','{}')`)
	d, err := New(ctx, db, Config{Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"p1": "okta", "p2": "", "p3": "azure"} {
		p, err := d.loadPerson(ctx, db, id)
		if err != nil || p.provider != want {
			t.Fatalf("%s: provider %q, want %q (%v)", id, p.provider, want, err)
		}
	}
	if g, err := d.loadGroup(ctx, db, "g1"); err != nil || g.provider != "okta" {
		t.Fatalf("group provider %+v %v", g, err)
	}
}
