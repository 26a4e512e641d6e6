package staff

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/store/storetest"
)

// newPGEnv is newEnv on a fresh PostgreSQL schema.
func newPGEnv(t *testing.T) *env {
	t.Helper()
	db := storetest.Postgres(t)
	c := &clock{t: t0}
	e := &env{clock: c, keys: &fakeKeys{now: c.Now}, alerts: &fakeAlerts{}, creds: &fakeCreds{held: map[string]int{}}}
	var err error
	e.d, err = New(context.Background(), db, Config{Keys: e.keys, Alerts: e.alerts, Credentials: []CredentialRevoker{e.creds}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.h = e.d.SCIMHandler()
	e.token, err = e.d.AddSCIMToken(context.Background(), "okta", "admin:alice")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// SCIM provisioning on PostgreSQL: create, case-insensitive uniqueness and
// filter, group membership making a custodian, an atomic PATCH that fails
// half-way, and a deactivation that offboards.
func TestSCIMPostgres(t *testing.T) {
	e := newPGEnv(t)
	ctx := context.Background()
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))

	code, body := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, body)
	id := body["id"].(string)
	code, body = e.do(t, "POST", "/scim/v2/Users", strings.Replace(fixture(t, "okta_create_user.json"), "test.user@okta.local", "Test.User@OKTA.local", 1))
	mustStatus(t, code, 409, body)
	code, body = e.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "TEST.user@okta.local"`), "")
	mustStatus(t, code, 200, body)
	if body["totalResults"].(float64) != 1 {
		t.Fatalf("case-insensitive userName filter: %v", body)
	}
	code, body = e.do(t, "PUT", "/scim/v2/Users/"+id, fixture(t, "okta_put_user.json", "%ID%", id))
	mustStatus(t, code, 200, body)

	code, body = e.do(t, "POST", "/scim/v2/Groups", fixture(t, "okta_create_group.json"))
	mustStatus(t, code, 201, body)
	gid := body["id"].(string)
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "okta_group_add.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	cs, err := e.d.Custodians(ctx, SigningKey, "k1")
	if err != nil || len(cs) != 1 || cs[0].StaffID != id {
		t.Fatalf("custodians of k1: %+v %v", cs, err)
	}

	before, _ := e.d.Person(ctx, id)
	code, body = e.do(t, "PATCH", "/scim/v2/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
		{"op":"replace","path":"displayName","value":"Changed"},{"op":"replace","path":"noSuchAttribute","value":"x"}]}`)
	mustStatus(t, code, 400, body)
	if after, _ := e.d.Person(ctx, id); after.DisplayName != before.DisplayName || !after.ModifiedAt.Equal(before.ModifiedAt) {
		t.Fatalf("failed PATCH partly applied: before %+v after %+v", before, after)
	}

	code, body = e.do(t, "PATCH", "/scim/v2/Users/"+id, fixture(t, "okta_deactivate.json"))
	mustStatus(t, code, 200, body)
	p, _ := e.d.Person(ctx, id)
	if p.Status != Departed || len(p.Groups) != 0 {
		t.Fatalf("after deactivation: %+v", p)
	}
	if e.keys.state("k1") != keys.Revoked || len(e.creds.got) != 1 || e.alerts.count(RuleStaffDeparted) != 1 {
		t.Fatalf("offboarding incomplete: keys %+v creds %v", e.keys.calls, e.creds.got)
	}
	if pend, _ := e.d.pendingOffboardings(ctx); len(pend) != 0 {
		t.Fatalf("offboarding still pending: %v", pend)
	}
	changes, err := e.d.Changes(ctx, 0, 0)
	if err != nil || len(changes) == 0 {
		t.Fatalf("changes: %v %v", changes, err)
	}
}
