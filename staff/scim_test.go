package staff

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
)

func TestOktaSequence(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))

	// Okta checks whether the user exists first.
	code, body := e.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "test.user@okta.local"`)+"&startIndex=1&count=100", "")
	mustStatus(t, code, 200, body)
	if body["totalResults"].(float64) != 0 {
		t.Fatalf("want no user yet, got %v", body)
	}
	code, body = e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, body)
	id := body["id"].(string)
	if _, ok := body["password"]; ok {
		t.Fatal("password echoed back")
	}
	if body["active"] != true || body["userName"] != "test.user@okta.local" {
		t.Fatalf("created user: %v", body)
	}
	p, err := e.d.Person(ctx, id)
	if err != nil || p.Status != Active || p.Kind != Employee || p.ExternalID != "00ujl29u0le5T6Aj10h7" {
		t.Fatalf("stored person %+v, %v", p, err)
	}
	code, body = e.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "TEST.user@okta.local"`), "")
	mustStatus(t, code, 200, body)
	if body["totalResults"].(float64) != 1 {
		t.Fatalf("case-insensitive userName filter: %v", body)
	}

	code, body = e.do(t, "PUT", "/scim/v2/Users/"+id, fixture(t, "okta_put_user.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	if body["name"].(map[string]any)["middleName"] != "Excited" {
		t.Fatalf("PUT not applied: %v", body)
	}

	code, body = e.do(t, "POST", "/scim/v2/Groups", fixture(t, "okta_create_group.json"))
	mustStatus(t, code, 201, body)
	gid := body["id"].(string)
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "okta_group_add.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	if ms, _ := body["members"].([]any); len(ms) != 1 {
		t.Fatalf("member not added: %v", body)
	}
	code, body = e.do(t, "GET", "/scim/v2/Users/"+id, "")
	mustStatus(t, code, 200, body)
	if gs, _ := body["groups"].([]any); len(gs) != 1 || gs[0].(map[string]any)["display"] != "auth-key-admins" {
		t.Fatalf("user's groups: %v", body["groups"])
	}
	cs, err := e.d.Custodians(ctx, SigningKey, "k1")
	if err != nil || len(cs) != 1 || cs[0].StaffID != id || cs[0].Via != "group:auth-key-admins" {
		t.Fatalf("custodians of k1: %+v %v", cs, err)
	}
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "okta_group_rename.json", "%GID%", gid))
	mustStatus(t, code, 200, body)

	// Okta deactivates with a path-less replace.
	code, body = e.do(t, "PATCH", "/scim/v2/Users/"+id, fixture(t, "okta_deactivate.json"))
	mustStatus(t, code, 200, body)
	if body["active"] != false {
		t.Fatalf("still active: %v", body)
	}
	p, _ = e.d.Person(ctx, id)
	if p.Status != Departed || len(p.Groups) != 0 {
		t.Fatalf("after deactivation: %+v", p)
	}
	if len(e.keys.callsOf("rotate")) != 1 || e.keys.state("k1") != keys.Revoked {
		t.Fatalf("k1 not rotated and revoked: %+v", e.keys.calls)
	}
	if len(e.creds.got) != 1 || e.creds.got[0] != id {
		t.Fatalf("credentials not revoked: %v", e.creds.got)
	}
	if e.alerts.count(RuleStaffDeparted) != 1 {
		t.Fatalf("alerts: %+v", e.alerts.alerts)
	}
	// Group membership was ended by the departure, and removing it again is harmless.
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "okta_group_remove.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	if pend, _ := e.d.pendingOffboardings(ctx); len(pend) != 0 {
		t.Fatalf("offboarding still pending: %v", pend)
	}
	changes, _ := e.d.Changes(ctx, 0, 0)
	for _, c := range changes {
		if c.Actor == "" {
			t.Fatalf("unattributed change %+v", c)
		}
	}
	if changes[len(changes)-1].Actor != "scim:okta" && !hasAction(changes, "person.offboard") {
		t.Fatalf("changes: %+v", changes)
	}
}

func hasAction(cs []Change, action string) bool {
	for _, c := range cs {
		if c.Action == action {
			return true
		}
	}
	return false
}

func TestEntraSequence(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	code, body := e.do(t, "GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "non-existent user"`), "")
	mustStatus(t, code, 200, body)
	code, body = e.do(t, "POST", "/scim/v2/Users", fixture(t, "entra_create_user.json"))
	mustStatus(t, code, 201, body)
	id := body["id"].(string)
	code, body = e.do(t, "POST", "/scim/v2/Groups", fixture(t, "entra_create_group.json"))
	mustStatus(t, code, 201, body)
	gid := body["id"].(string)
	code, body = e.do(t, "GET", "/scim/v2/Groups?filter="+url.QueryEscape(`displayName eq "auth-key-admins"`), "")
	mustStatus(t, code, 200, body)
	if body["totalResults"].(float64) != 1 {
		t.Fatalf("group filter: %v", body)
	}
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "entra_group_add.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "entra_group_remove.json", "%ID%", id))
	mustStatus(t, code, 200, body)
	if _, ok := body["members"]; ok {
		t.Fatalf("member not removed: %v", body)
	}
	code, body = e.do(t, "PATCH", "/scim/v2/Groups/"+gid, fixture(t, "entra_group_add.json", "%ID%", id))
	mustStatus(t, code, 200, body)

	code, body = e.do(t, "PATCH", "/scim/v2/Users/"+id, fixture(t, "entra_update_user.json"))
	mustStatus(t, code, 200, body)
	emails := body["emails"].([]any)
	if len(emails) != 1 || emails[0].(map[string]any)["value"] != "updatedEmail@microsoft.com" {
		t.Fatalf("emails: %v", emails)
	}
	if body["name"].(map[string]any)["familyName"] != "updatedFamilyName" {
		t.Fatalf("name: %v", body["name"])
	}
	if ent, _ := body[enterpriseSchema].(map[string]any); ent["department"] != "Auth" {
		t.Fatalf("enterprise extension: %v", body)
	}
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))
	// Entra's non-compliant string "False".
	code, body = e.do(t, "PATCH", "/scim/v2/Users/"+id, fixture(t, "entra_disable_user.json"))
	mustStatus(t, code, 200, body)
	if body["active"] != false {
		t.Fatalf("not disabled: %v", body)
	}
	if p, _ := e.d.Person(ctx, id); p.Status != Departed {
		t.Fatalf("status %s", p.Status)
	}
	if e.keys.state("k1") != keys.Revoked {
		t.Fatal("k1 not revoked after Entra disable")
	}
	// Entra deletes later; the record stays for the history.
	code, _ = e.do(t, "DELETE", "/scim/v2/Users/"+id, "")
	mustStatus(t, code, 204, nil)
	code, body = e.do(t, "GET", "/scim/v2/Users/"+id, "")
	mustStatus(t, code, 404, body)
	if err := e.d.CheckActor(ctx, id); !errors.Is(err, ErrDeparted) {
		t.Fatalf("CheckActor after delete: %v", err)
	}
}

func TestDeleteDeparts(t *testing.T) {
	e := newEnv(t, nil)
	code, body := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, body)
	id := body["id"].(string)
	if err := e.d.AddCustodian(context.Background(), SigningKey, "k9", id, Operate, "admin:alice"); err != nil {
		t.Fatal(err)
	}
	e.keys.add("k9", keys.Active, t0)
	code, _ = e.do(t, "DELETE", "/scim/v2/Users/"+id, "")
	mustStatus(t, code, 204, nil)
	if e.keys.state("k9") != keys.Revoked {
		t.Fatalf("k9 %s", e.keys.state("k9"))
	}
	// The userName is free again for a new identity.
	code, body = e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, body)
	if body["id"] == id {
		t.Fatal("reused id")
	}
}

func TestAtomicPatch(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	_, body := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	id := body["id"].(string)
	_, other := e.do(t, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"taken@okta.local"}`)
	otherID := other["id"].(string)
	_, g := e.do(t, "POST", "/scim/v2/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"ops"}`)
	gid := g["id"].(string)
	before, _ := e.d.Person(ctx, id)
	cases := []struct {
		name, path, body string
		want             int
		scimType         string
	}{
		{"fail/third-op-bad-path", "/scim/v2/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
			{"op":"replace","path":"displayName","value":"Changed"},{"op":"replace","path":"active","value":false},
			{"op":"replace","path":"noSuchAttribute","value":"x"}]}`, 400, "invalidPath"},
		{"fail/third-op-bad-value", "/scim/v2/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
			{"op":"replace","path":"displayName","value":"Changed"},{"op":"replace","value":{"active":false}},
			{"op":"replace","path":"active","value":"maybe"}]}`, 400, "invalidValue"},
		{"fail/third-op-duplicate-username", "/scim/v2/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
			{"op":"replace","path":"displayName","value":"Changed"},{"op":"add","path":"title","value":"Boss"},
			{"op":"replace","path":"userName","value":"TAKEN@okta.local"}]}`, 409, "uniqueness"},
		{"fail/third-op-unknown-member", "/scim/v2/Groups/" + gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
			{"op":"add","path":"members","value":[{"value":"` + id + `"}]},{"op":"replace","path":"displayName","value":"ops2"},
			{"op":"add","path":"members","value":[{"value":"no-such-user"}]}]}`, 400, "invalidValue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(t, "PATCH", tc.path, tc.body)
			mustStatus(t, code, tc.want, body)
			if body["scimType"] != tc.scimType {
				t.Fatalf("scimType %v, want %s", body["scimType"], tc.scimType)
			}
			if schemas, _ := body["schemas"].([]any); len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" {
				t.Fatalf("not a SCIM error: %v", body)
			}
			after, _ := e.d.Person(ctx, id)
			if after.DisplayName != before.DisplayName || after.Status != Active || !after.ModifiedAt.Equal(before.ModifiedAt) || len(after.Groups) != 0 {
				t.Fatalf("partly applied: before %+v after %+v", before, after)
			}
			_, gb := e.do(t, "GET", "/scim/v2/Groups/"+gid, "")
			if gb["displayName"] != "ops" || gb["members"] != nil {
				t.Fatalf("group partly changed: %v", gb)
			}
		})
	}
	if len(e.keys.calls) != 0 || e.alerts.count(RuleStaffDeparted) != 0 {
		t.Fatal("a failed PATCH triggered offboarding")
	}
	_ = otherID
}

func TestUniqueness(t *testing.T) {
	e := newEnv(t, nil)
	code, body := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, body)
	code, body = e.do(t, "POST", "/scim/v2/Users", strings.Replace(fixture(t, "okta_create_user.json"), "test.user@okta.local", "Test.User@OKTA.local", 1))
	mustStatus(t, code, 409, body)
	if body["scimType"] != "uniqueness" {
		t.Fatalf("body %v", body)
	}
	code, body = e.do(t, "POST", "/scim/v2/Groups", fixture(t, "okta_create_group.json"))
	mustStatus(t, code, 201, body)
	code, body = e.do(t, "POST", "/scim/v2/Groups", fixture(t, "okta_create_group.json"))
	mustStatus(t, code, 409, body)
	if ps, _ := e.d.People(context.Background()); len(ps) != 1 {
		t.Fatalf("people: %d", len(ps))
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	_, u := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	id := u["id"].(string)
	cases := []struct {
		name, method, path, body string
		want                     int
		scimType                 string
	}{
		{"fail/bad-filter", "GET", "/scim/v2/Users?filter=" + url.QueryEscape(`userName eq`), "", 400, "invalidFilter"},
		{"fail/filter-unknown-attribute", "GET", "/scim/v2/Users?filter=" + url.QueryEscape(`shoeSize gt 3`), "", 400, "invalidFilter"},
		{"fail/group-bad-filter", "GET", "/scim/v2/Groups?filter=" + url.QueryEscape(`displayName eq "x" and (`), "", 400, "invalidFilter"},
		{"fail/malformed-json", "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":`, 400, "invalidSyntax"},
		{"fail/unknown-schema", "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:example:evil"],"userName":"x"}`, 400, "invalidValue"},
		{"fail/no-schemas", "POST", "/scim/v2/Users", `{"userName":"x"}`, 400, "invalidSyntax"},
		{"fail/missing-username", "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}`, 400, "invalidValue"},
		{"fail/bad-kind", "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + StaffSchema + `"],"userName":"x","` + StaffSchema + `":{"kind":"pirate"}}`, 400, "invalidValue"},
		{"fail/patch-wrong-schema", "PATCH", "/scim/v2/Users/" + id, `{"schemas":["urn:example"],"Operations":[{"op":"replace","path":"active","value":false}]}`, 400, "invalidValue"},
		{"fail/patch-no-ops", "PATCH", "/scim/v2/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}`, 400, "invalidValue"},
		{"fail/patch-groups-readonly", "PATCH", "/scim/v2/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"groups","value":[{"value":"x"}]}]}`, 400, "mutability"},
		{"fail/unknown-user", "GET", "/scim/v2/Users/nope", "", 404, ""},
		{"ok/pagination", "GET", "/scim/v2/Users?startIndex=1&count=1", "", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(t, tc.method, tc.path, tc.body)
			mustStatus(t, code, tc.want, body)
			if got, _ := body["scimType"].(string); got != tc.scimType {
				t.Fatalf("scimType %q, want %q (%v)", got, tc.scimType, body)
			}
		})
	}
	if p, _ := e.d.Person(context.Background(), id); p.Status != Active {
		t.Fatal("bad input changed the user")
	}
	if ps, _ := e.d.People(context.Background()); len(ps) != 1 {
		t.Fatalf("bad input created users: %d", len(ps))
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	cases := []struct {
		name, header string
		want         int
	}{
		{"fail/none", "", 401},
		{"fail/basic", "Basic dXNlcjpwYXNz", 401},
		{"fail/wrong", "Bearer cscim_wrong", 401},
		{"ok/token", "Bearer " + e.token, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/scim/v2/Users", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
	var n int
	if err := e.d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM staff_scim_tokens WHERE hash=$1`, e.token).Scan(&n); err != nil || n != 0 {
		t.Fatal("token stored in clear")
	}
	if err := e.d.RevokeSCIMToken(ctx, "okta", "admin:alice"); err != nil {
		t.Fatal(err)
	}
	code, _ := e.do(t, "GET", "/scim/v2/Users", "")
	mustStatus(t, code, http.StatusUnauthorized, nil)
}

func TestPagination(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 5; i++ {
		code, body := e.do(t, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u`+string(rune('a'+i))+`"}`)
		mustStatus(t, code, 201, body)
		e.clock.Add(time.Second)
	}
	cases := []struct {
		name, query string
		total, n    int
		first       string
	}{
		{"ok/all", "", 5, 5, "ua"},
		{"ok/second-page", "?startIndex=3&count=2", 5, 2, "uc"},
		{"ok/past-end", "?startIndex=9&count=2", 5, 0, ""},
		{"ok/count-zero", "?count=0", 5, 0, ""},
		{"ok/filter-and-page", "?filter=" + url.QueryEscape(`userName sw "u"`) + "&startIndex=2&count=10", 5, 4, "ub"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(t, "GET", "/scim/v2/Users"+tc.query, "")
			mustStatus(t, code, 200, body)
			rs, _ := body["Resources"].([]any)
			if int(body["totalResults"].(float64)) != tc.total || len(rs) != tc.n {
				t.Fatalf("total %v n %d: %v", body["totalResults"], len(rs), body)
			}
			if tc.first != "" && rs[0].(map[string]any)["userName"] != tc.first {
				t.Fatalf("first %v", rs[0])
			}
		})
	}
}
