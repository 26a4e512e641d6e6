package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/staff"
)

// raw sends one request with an Authorization header as given ("" for
// none) and returns the status and the decoded JSON body (nil if none).
func raw(t *testing.T, e *env, method, path, authz string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.APIURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != nil {
		if strings.HasPrefix(path, "/scim/") {
			req.Header.Set("Content-Type", "application/scim+json")
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil && strings.HasSuffix(path, "/stream") {
			return 200, nil // a stream that was let in and kept open
		}
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if strings.HasSuffix(path, "/stream") && resp.StatusCode == 200 {
		return 200, nil
	}
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func adminToken(t *testing.T, e *env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.Cfg.Data, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// addCred makes a credential over the API with the bootstrap admin credential.
func addCred(t *testing.T, e *env, name string, role authority.Role, person string) server.CredentialAnswer {
	t.Helper()
	var out server.CredentialAnswer
	if err := e.API.Do(context.Background(), "POST", "/v1/credentials", map[string]string{"name": name, "role": string(role), "person": person}, &out); err != nil {
		t.Fatalf("add %s credential %s: %v", role, name, err)
	}
	if out.ID == "" || out.Token == "" || out.Role != role {
		t.Fatalf("credential answer %+v", out)
	}
	return out
}

// Each role against each class of endpoint: allowed ones pass the
// authorisation (any status but 401/403), the others get 403 with the JSON
// error contract; no credential, an unknown one, a wrong scheme and a token
// in another letter case get 401.
func TestCredentialRolesPerEndpoint(t *testing.T) {
	e := start(t)
	toks := map[authority.Role]string{authority.RoleAdmin: adminToken(t, e)}
	for _, r := range []authority.Role{authority.RoleGateway, authority.RoleDetector, authority.RoleSCIM} {
		toks[r] = addCred(t, e, "c-"+string(r), r, "").Token
	}
	type ep struct{ method, path, body string }
	admin := []ep{
		{"GET", "/v1/keys", ""}, {"GET", "/v1/keys/hygiene", ""}, {"GET", "/v1/staff", ""},
		{"GET", "/v1/clients", ""}, {"POST", "/v1/clients", `{"name":"x","audience":[]}`},
		{"GET", "/v1/credentials", ""}, {"POST", "/v1/credentials", `{"name":"x","role":"nope"}`},
		{"POST", "/v1/credentials/cr_0000/revoke", ""}, {"POST", "/v1/scim/tokens", `{"name":""}`},
		{"POST", "/v1/keys/nokid/revoke", `{"reason":""}`}, {"GET", "/v1/keys/nokid/custodians", ""},
		{"POST", "/v1/incidents/none/scope", `{}`}, {"POST", "/v1/incidents/none/hold", `{}`},
	}
	follow := []ep{{"POST", "/v1/ledger/lookup", `{}`}, {"GET", "/v1/ledger/stream", ""}, {"POST", "/v1/events", "{}\n"}}
	alerts := []ep{{"GET", "/v1/alerts", ""}, {"GET", "/v1/incidents", ""}, {"GET", "/v1/incidents/none", ""}}
	scim := []ep{{"GET", "/scim/v2/Users", ""}, {"GET", "/scim/v2/Groups", ""}}
	public := []ep{{"GET", "/.well-known/jwks.json", ""}, {"GET", "/v1/keys/revoked", ""}}
	self := []ep{{"GET", "/v1/credentials/self", ""}}
	allowed := map[authority.Role][][]ep{
		authority.RoleAdmin:    {admin, follow, alerts, public, self},
		authority.RoleGateway:  {follow, public, self},
		authority.RoleDetector: {follow, alerts, public, self},
		authority.RoleSCIM:     {scim, public, self},
	}
	all := [][]ep{admin, follow, alerts, scim, public, self}
	for role, tok := range toks {
		ok := map[ep]bool{}
		for _, set := range allowed[role] {
			for _, x := range set {
				ok[x] = true
			}
		}
		for _, set := range all {
			for _, x := range set {
				var body any
				if x.body != "" {
					body = x.body
				}
				for _, scheme := range []string{"Bearer ", "bearer ", "BEARER ", "Bearer   "} {
					t.Run(fmt.Sprintf("%s/%s_%s/%q", role, x.method, x.path, scheme), func(t *testing.T) {
						st, m := raw(t, e, x.method, x.path, scheme+tok, body)
						if ok[x] {
							if st == 401 || st == 403 {
								t.Fatalf("allowed %s got %d %v", role, st, m)
							}
							return
						}
						if st != 403 {
							t.Fatalf("%s got %d %v, want 403", role, st, m)
						}
						if !strings.HasPrefix(x.path, "/scim/") && (m["error"] != "insufficient_scope" || m["error_description"] == "") {
							t.Fatalf("403 body %v", m)
						}
					})
				}
			}
		}
	}
	// Refusals before any role: 401 on every protected class.
	gw := toks[authority.RoleGateway]
	for name, authz := range map[string]string{
		"fail/none":        "",
		"fail/unknown":     "Bearer ca_notatoken",
		"fail/upper_token": "Bearer " + strings.ToUpper(gw),
		"fail/lower_token": "Bearer " + strings.ToLower(gw),
		"fail/basic":       "Basic " + gw,
		"fail/no_space":    "Bearer" + gw,
		"fail/truncated":   "Bearer " + gw[:len(gw)-1],
	} {
		for _, x := range []ep{admin[0], follow[0], alerts[0], scim[0]} {
			t.Run(name+x.path, func(t *testing.T) {
				st, _ := raw(t, e, x.method, x.path, authz, nil)
				if st != 401 {
					t.Fatalf("got %d, want 401", st)
				}
			})
		}
	}
	// Only hashes are stored: the tokens appear nowhere in the store's tables.
	for _, tok := range toks {
		var n int
		if err := e.S.DB.QueryRow(`SELECT COUNT(*) FROM authority_credentials WHERE token_hash=$1 OR name=$1 OR id=$1`, tok).Scan(&n); err != nil || n != 0 {
			t.Fatalf("token found in clear (%d, %v)", n, err)
		}
	}
}

// A credential revoked (by its ID in any letter case) is refused at once,
// the revocation is listed, and revoking again is a 404 that changes nothing.
func TestCredentialRevokedThenReused(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for i, variant := range []func(string) string{strings.ToUpper, func(s string) string { return s }, func(s string) string { return " " + s + " " }} {
		c := addCred(t, e, fmt.Sprintf("gw-%d", i), authority.RoleGateway, "")
		if st, _ := raw(t, e, "POST", "/v1/ledger/lookup", "Bearer "+c.Token, `{}`); st == 401 || st == 403 {
			t.Fatalf("live gateway credential refused %d", st)
		}
		var out authority.Credential
		if err := e.API.Do(ctx, "POST", "/v1/credentials/"+strings.ReplaceAll(variant(c.ID), " ", "%20")+"/revoke", map[string]string{"reason": "test"}, &out); err != nil {
			t.Fatalf("revoke %q: %v", variant(c.ID), err)
		}
		if out.ID != c.ID || out.RevokedAt == nil {
			t.Fatalf("revoked %+v", out)
		}
		for _, p := range []string{"/v1/ledger/lookup", "/v1/credentials/self"} {
			if st, _ := raw(t, e, "POST", p, "Bearer "+c.Token, `{}`); st != 401 && !(p == "/v1/credentials/self" && st == 405) {
				t.Fatalf("revoked credential on %s: %d", p, st)
			}
		}
		if st, m := raw(t, e, "POST", "/v1/credentials/"+c.ID+"/revoke", "Bearer "+adminToken(t, e), nil); st != 404 || m["error"] != "not_found" {
			t.Fatalf("second revoke %d %v", st, m)
		}
	}
	var list struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	if err := e.API.Do(ctx, "GET", "/v1/credentials", nil, &list); err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, c := range list.Credentials {
		if c.RevokedAt != nil {
			revoked++
			if c.RevokedBy == "" || c.RevokeReason != "test" {
				t.Fatalf("revocation not attributed: %+v", c)
			}
		}
	}
	if revoked != 3 {
		t.Fatalf("%d revoked listed, want 3", revoked)
	}
	for name, body := range map[string]map[string]string{
		"fail/unknown_role":  {"name": "x", "role": "root"},
		"fail/role_case":     {"name": "x", "role": "Admin"},
		"fail/bad_name":      {"name": "a b", "role": "gateway"},
		"fail/empty_name":    {"name": "", "role": "gateway"},
		"fail/provider_gw":   {"name": "x", "role": "gateway", "provider": "okta"},
		"fail/unknown_staff": {"name": "x", "role": "admin", "person": "nobody-here"},
	} {
		t.Run(name, func(t *testing.T) {
			st, m := raw(t, e, "POST", "/v1/credentials", "Bearer "+adminToken(t, e), body)
			if st != 400 && st != 404 {
				t.Fatalf("got %d %v", st, m)
			}
		})
	}
	if st, _ := raw(t, e, "POST", "/v1/credentials", "Bearer "+adminToken(t, e), `{"name":"x","role":"gateway","ROLE":"admin"}`); st != 400 {
		t.Fatalf("duplicate key in another case: %d", st)
	}
	var after struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	e.API.Do(ctx, "GET", "/v1/credentials", nil, &after)
	if len(after.Credentials) != len(list.Credentials) {
		t.Fatalf("bad input changed the credentials: %d then %d", len(list.Credentials), len(after.Credentials))
	}
}

// The last live admin credential cannot be revoked, whichever one it is.
func TestLastAdminCredentialKept(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	var list struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	if err := e.API.Do(ctx, "GET", "/v1/credentials", nil, &list); err != nil || len(list.Credentials) != 1 {
		t.Fatalf("fresh install credentials %+v %v", list, err)
	}
	boot := list.Credentials[0]
	if boot.Role != authority.RoleAdmin {
		t.Fatalf("bootstrap credential %+v", boot)
	}
	if st, m := raw(t, e, "POST", "/v1/credentials/"+boot.ID+"/revoke", "Bearer "+adminToken(t, e), nil); st != 409 || m["error"] != "last_admin" {
		t.Fatalf("revoking the only admin: %d %v", st, m)
	}
	second := addCred(t, e, "ops", authority.RoleAdmin, "")
	addCred(t, e, "gw", authority.RoleGateway, "")
	if st, _ := raw(t, e, "POST", "/v1/credentials/"+strings.ToUpper(boot.ID)+"/revoke", "Bearer "+second.Token, nil); st != 200 {
		t.Fatalf("revoking the bootstrap with another admin left: %d", st)
	}
	if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+adminToken(t, e), nil); st != 401 {
		t.Fatalf("revoked bootstrap credential: %d", st)
	}
	// A gateway credential does not count as an admin.
	if st, m := raw(t, e, "POST", "/v1/credentials/"+second.ID+"/revoke", "Bearer "+second.Token, nil); st != 409 || m["error"] != "last_admin" {
		t.Fatalf("revoking the last admin: %d %v", st, m)
	}
	if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+second.Token, nil); st != 200 {
		t.Fatalf("last admin no longer works: %d", st)
	}
}

// scimUser provisions a user over SCIM with tok and returns its id.
func scimUser(t *testing.T, e *env, tok, userName string) string {
	t.Helper()
	st, m := raw(t, e, "POST", "/scim/v2/Users", "Bearer "+tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": userName, "active": true,
	})
	if st != 201 {
		t.Fatalf("provision %s: %d %v", userName, st, m)
	}
	return m["id"].(string)
}

func hasAlert(e *env, rule, entity string) bool {
	for _, a := range e.S.Detect.Alerts() {
		if a.Rule == rule && a.Entity == entity {
			return true
		}
	}
	return false
}

// An admin credential bound to a person is revoked when the person departs,
// by SCIM deactivation, SCIM deletion or the end of their contract; using it
// afterwards is a 401 and raises departed_credential_use.
func TestPersonAdminRevokedAtDeparture(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	idp := addCred(t, e, "okta", authority.RoleSCIM, "").Token
	departs := map[string]func(id string){
		"scim_deactivate": func(id string) {
			if st, m := raw(t, e, "PATCH", "/scim/v2/Users/"+id, "Bearer "+idp, map[string]any{
				"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
				"Operations": []map[string]any{{"op": "replace", "path": "active", "value": false}},
			}); st != 200 {
				t.Fatalf("deactivate %d %v", st, m)
			}
		},
		"scim_delete": func(id string) {
			if st, m := raw(t, e, "DELETE", "/scim/v2/Users/"+id, "Bearer "+idp, nil); st != 204 {
				t.Fatalf("delete %d %v", st, m)
			}
		},
		"end_date": func(id string) {
			end := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
			if st, m := raw(t, e, "PATCH", "/scim/v2/Users/"+id, "Bearer "+idp, map[string]any{
				"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
				"Operations": []map[string]any{{"op": "add", "path": staff.StaffSchema + ":endDate", "value": end}},
			}); st != 200 {
				t.Fatalf("end date %d %v", st, m)
			}
			time.Sleep(1600 * time.Millisecond)
			if err := e.S.Staff.Sweep(ctx); err != nil {
				t.Fatalf("sweep: %v", err)
			}
		},
	}
	for name, depart := range departs {
		t.Run(name, func(t *testing.T) {
			id := scimUser(t, e, idp, "admin-"+name+"@shop.example")
			c := addCred(t, e, "adm-"+name, authority.RoleAdmin, strings.ToUpper(id))
			if c.Person != id {
				t.Fatalf("bound to %q, want %q", c.Person, id)
			}
			if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+c.Token, nil); st != 200 {
				t.Fatalf("live person's admin credential: %d", st)
			}
			depart(id)
			got, err := e.S.Creds.Get(ctx, c.ID)
			if err != nil || got.RevokedAt == nil {
				t.Fatalf("credential of the departed person not revoked: %+v %v", got, err)
			}
			for _, p := range []string{"GET /v1/keys", "GET /v1/alerts", "POST /v1/ledger/lookup", "GET /v1/credentials/self"} {
				method, path, _ := strings.Cut(p, " ")
				st, m := raw(t, e, method, path, "Bearer "+c.Token, nil)
				if st != 401 || m["error"] != "invalid_token" {
					t.Fatalf("departed person's admin credential on %s: %d %v", p, st, m)
				}
			}
			if !hasAlert(e, staff.RuleDepartedCredentialUse, id) {
				t.Fatalf("no %s alert for %s", staff.RuleDepartedCredentialUse, id)
			}
			// And no new credential is bound to them.
			if st, _ := raw(t, e, "POST", "/v1/credentials", "Bearer "+adminToken(t, e), map[string]string{"name": "again-" + name, "role": "admin", "person": id}); st != 409 && st != 404 {
				t.Fatalf("credential for a departed person: %d", st)
			}
		})
	}
}

// A SCIM credential manages only what its identity provider provisioned:
// not bootstrap-admin, not identities of another provider or of the admin
// API, by id in any letter case, by filter, or through a group.
func TestSCIMCredentialScope(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	okta := addCred(t, e, "okta", authority.RoleSCIM, "").Token
	azure := addCred(t, e, "azure", authority.RoleSCIM, "").Token
	mine := scimUser(t, e, okta, "alice@shop.example")
	theirs := scimUser(t, e, azure, "bob@shop.example")
	boot, err := e.S.Staff.PersonByUserName(ctx, "bootstrap-admin")
	if err != nil {
		t.Fatal(err)
	}
	byAdmin, err := e.S.Staff.AddPerson(ctx, staff.Person{UserName: "carol@shop.example"}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	patch := map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "replace", "path": "active", "value": false}},
	}
	put := map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "x@shop.example", "active": false}
	for _, id := range []string{boot.ID, theirs, byAdmin.ID} {
		for _, v := range []string{id, strings.ToUpper(id)} {
			for _, op := range []struct {
				method string
				body   any
			}{{"GET", nil}, {"PATCH", patch}, {"PUT", put}, {"DELETE", nil}} {
				t.Run(op.method+"/"+v, func(t *testing.T) {
					st, m := raw(t, e, op.method, "/scim/v2/Users/"+v, "Bearer "+okta, op.body)
					if st != 403 && !(v != id && st == 404) {
						t.Fatalf("okta %s on %s: %d %v", op.method, v, st, m)
					}
				})
			}
		}
	}
	for _, filter := range []string{`userName eq "bootstrap-admin"`, `userName eq "BOOTSTRAP-ADMIN"`, `userName eq "bob@shop.example"`, `userName sw "b"`, ``} {
		st, m := raw(t, e, "GET", "/scim/v2/Users?filter="+strings.ReplaceAll(filter, " ", "%20"), "Bearer "+okta, nil)
		if st != 200 {
			t.Fatalf("list %q: %d", filter, st)
		}
		for _, r := range m["Resources"].([]any) {
			if r.(map[string]any)["id"] != mine {
				t.Fatalf("list %q shows %v to okta", filter, r.(map[string]any)["id"])
			}
		}
	}
	// Groups: okta cannot put someone else's identity in its group, nor
	// touch a group another provider made.
	st, m := raw(t, e, "POST", "/scim/v2/Groups", "Bearer "+okta, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "auth-key-admins",
		"members": []map[string]string{{"value": boot.ID}},
	})
	if st != 403 {
		t.Fatalf("group with bootstrap-admin: %d %v", st, m)
	}
	st, m = raw(t, e, "POST", "/scim/v2/Groups", "Bearer "+azure, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "azure-admins",
		"members": []map[string]string{{"value": theirs}},
	})
	if st != 201 {
		t.Fatalf("azure group: %d %v", st, m)
	}
	gid := m["id"].(string)
	for _, op := range []struct {
		method string
		body   any
	}{{"GET", nil}, {"PATCH", map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "add", "path": "members", "value": []map[string]string{{"value": mine}}}}}}, {"DELETE", nil}} {
		if st, _ := raw(t, e, op.method, "/scim/v2/Groups/"+gid, "Bearer "+okta, op.body); st != 403 {
			t.Fatalf("okta %s azure's group: %d", op.method, st)
		}
	}
	// Nothing changed: bootstrap-admin, bob and carol are active, and the
	// bootstrap credential works.
	for _, id := range []string{boot.ID, theirs, byAdmin.ID} {
		p, err := e.S.Staff.Person(ctx, id)
		if err != nil || p.Status != staff.Active {
			t.Fatalf("%s changed: %+v %v", id, p, err)
		}
	}
	if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+adminToken(t, e), nil); st != 200 {
		t.Fatalf("bootstrap credential: %d", st)
	}
	// Its own identity it manages; an admin credential on SCIM is 403, a
	// revoked scim credential 401; custos scim tokens add still works.
	if st, _ := raw(t, e, "PATCH", "/scim/v2/Users/"+mine, "Bearer "+okta, patch); st != 200 {
		t.Fatalf("okta on its own user: %d", st)
	}
	if st, _ := raw(t, e, "GET", "/scim/v2/Users", "Bearer "+adminToken(t, e), nil); st != 403 {
		t.Fatalf("admin credential on SCIM: %d", st)
	}
	var legacy struct {
		Token, ID string
	}
	if err := e.API.Do(ctx, "POST", "/v1/scim/tokens", map[string]string{"name": "onelogin"}, &legacy); err != nil || legacy.Token == "" {
		t.Fatalf("scim tokens add: %+v %v", legacy, err)
	}
	ol := scimUser(t, e, legacy.Token, "dave@shop.example")
	if st, _ := raw(t, e, "GET", "/scim/v2/Users/"+ol, "Bearer "+okta, nil); st != 403 {
		t.Fatalf("okta on onelogin's user: %d", st)
	}
	if err := e.API.Do(ctx, "POST", "/v1/credentials/"+legacy.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := raw(t, e, "GET", "/scim/v2/Users/"+ol, "Bearer "+legacy.Token, nil); st != 401 {
		t.Fatalf("revoked scim credential: %d", st)
	}
}

// No SCIM operation may leave custos without an admin: when the last live
// admin credential belongs to a provisioned person, deactivating, deleting
// or ending them is refused and changes nothing.
func TestSCIMCannotRemoveLastAdmin(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	idp := addCred(t, e, "okta", authority.RoleSCIM, "").Token
	id := scimUser(t, e, idp, "lead@shop.example")
	lead := addCred(t, e, "lead", authority.RoleAdmin, id)
	var list struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	e.API.Do(ctx, "GET", "/v1/credentials", nil, &list)
	for _, c := range list.Credentials {
		if c.Name != "lead" && c.Role == authority.RoleAdmin {
			if st, _ := raw(t, e, "POST", "/v1/credentials/"+c.ID+"/revoke", "Bearer "+lead.Token, nil); st != 200 {
				t.Fatalf("revoke %s: %d", c.ID, st)
			}
		}
	}
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for name, op := range map[string]struct {
		method string
		body   any
	}{
		"deactivate": {"PATCH", map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
			"Operations": []map[string]any{{"op": "replace", "path": "active", "value": "False"}}}},
		"put_inactive": {"PUT", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "lead@shop.example", "active": false}},
		"end_date": {"PATCH", map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
			"Operations": []map[string]any{{"op": "add", "path": staff.StaffSchema + ":endDate", "value": past}}}},
		"delete": {"DELETE", nil},
	} {
		t.Run(name, func(t *testing.T) {
			st, m := raw(t, e, op.method, "/scim/v2/Users/"+id, "Bearer "+idp, op.body)
			if st != 409 || !strings.Contains(fmt.Sprint(m["detail"]), "admin") {
				t.Fatalf("got %d %v, want 409 naming the admin", st, m)
			}
			p, err := e.S.Staff.Person(ctx, id)
			if err != nil || p.Status != staff.Active {
				t.Fatalf("person changed: %+v %v", p, err)
			}
			if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+lead.Token, nil); st != 200 {
				t.Fatalf("last admin credential: %d", st)
			}
		})
	}
	// With a second admin, the departure goes through and revokes lead's.
	if st, _ := raw(t, e, "POST", "/v1/credentials", "Bearer "+lead.Token, map[string]string{"name": "second", "role": "admin"}); st != 201 {
		t.Fatalf("second admin: %d", st)
	}
	if st, _ := raw(t, e, "DELETE", "/scim/v2/Users/"+id, "Bearer "+idp, nil); st != 204 {
		t.Fatalf("delete with another admin: %d", st)
	}
	if st, _ := raw(t, e, "GET", "/v1/keys", "Bearer "+lead.Token, nil); st != 401 {
		t.Fatalf("departed lead's credential: %d", st)
	}
}

// Keys made by rotation (manual, offboarding) inherit the living custodians
// of the key they replace, never a departed one; hygiene passes on a fresh
// install and after every rotation.
func TestRotationInheritsLivingCustodians(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	hygiene := func(when string) {
		t.Helper()
		var h server.HygieneAnswer
		if err := e.API.Do(ctx, "GET", "/v1/keys/hygiene", nil, &h); err != nil || len(h.Findings) != 0 {
			t.Fatalf("hygiene %s: %+v %v", when, h, err)
		}
	}
	custodians := func(kid string) map[string]bool {
		t.Helper()
		var c server.CustodiansAnswer
		if err := e.API.Do(ctx, "GET", "/v1/keys/"+kid+"/custodians", nil, &c); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, x := range c.Custodians {
			if x.Until == nil {
				out[x.StaffID] = true
			}
		}
		return out
	}
	hygiene("on a fresh install")
	alice, _ := e.S.Staff.AddPerson(ctx, staff.Person{UserName: "alice"}, "admin:test")
	bob, _ := e.S.Staff.AddPerson(ctx, staff.Person{UserName: "bob"}, "admin:test")
	k0, _, _ := e.S.Keys.Signer(ctx)
	for _, p := range []string{alice.ID, bob.ID} {
		if err := e.API.Do(ctx, "POST", "/v1/keys/"+k0.KID+"/custodians", server.AddCustodianBody{StaffID: p, Role: staff.Operate}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var prev = k0.KID
	for i := 0; i < 3; i++ {
		var k keys.Key
		if err := e.API.Do(ctx, "POST", "/v1/keys/rotate", map[string]string{"reason": "test"}, &k); err != nil {
			t.Fatal(err)
		}
		c := custodians(k.KID)
		if !c[alice.ID] || !c[bob.ID] || len(c) != 3 {
			t.Fatalf("rotation %d: custodians of %s %v", i, k.KID, c)
		}
		if k.KID == prev {
			t.Fatal("no new key")
		}
		prev = k.KID
		hygiene(fmt.Sprintf("after rotation %d", i))
	}
	// Bob leaves: offboarding rotates; the new key has alice and the
	// bootstrap identity, not bob; the next rotations never bring him back.
	if err := e.S.Staff.Depart(ctx, bob.ID, "admin:test", "left"); err != nil {
		t.Fatal(err)
	}
	cur, _, _ := e.S.Keys.Signer(ctx)
	if cur.KID == prev {
		t.Fatal("offboarding did not rotate")
	}
	for i := 0; i < 2; i++ {
		c := custodians(cur.KID)
		if c[bob.ID] || !c[alice.ID] || len(c) != 2 {
			t.Fatalf("after bob left, custodians of %s: %v", cur.KID, c)
		}
		if err := e.API.Do(ctx, "POST", "/v1/keys/rotate", map[string]string{"reason": "test"}, &cur); err != nil {
			t.Fatal(err)
		}
	}
}

// The bootstrap admin console session survives nothing it should not: a
// session made with a credential that is then revoked no longer passes.
func TestConsoleSessionEndsWithCredential(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	second := addCred(t, e, "ops", authority.RoleAdmin, "")
	_ = second
	sess := e.S.Console.Sessions()
	boot, err := e.S.Staff.PersonByUserName(ctx, "bootstrap-admin")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	e.API.Do(ctx, "GET", "/v1/credentials", nil, &list)
	id, _, err := sess.Create(boot.ID, list.Credentials[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	get := func() int {
		req, _ := http.NewRequest("GET", e.APIURL+"/v1/keys", nil)
		req.AddCookie(&http.Cookie{Name: "custos_session", Value: id})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != 200 {
		t.Fatalf("session: %d", st)
	}
	if st, _ := raw(t, e, "POST", "/v1/credentials/"+list.Credentials[0].ID+"/revoke", "Bearer "+second.Token, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	if st := get(); st != 401 {
		t.Fatalf("session of a revoked credential: %d", st)
	}
}

// `custos gateway` runs with a gateway credential alone (no admin-token in
// its data directory): issued tokens pass, its events reach the authority;
// once the credential is revoked, tokens it has not seen fail closed.
func TestStandaloneGatewayWithGatewayCredential(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	secret := e.Client(t)
	arrived := e.S.Bus.Subscribe(1<<12, true)
	defer arrived.Close()
	gc := addCred(t, e, "edge", authority.RoleGateway, "")
	gl := servertest.Listen(t)
	addr := gl.Addr().String()
	gl.Close()
	cfg := e.Cfg
	cfg.Data = t.TempDir() // nothing of the authority's
	cfg.Gateway.Listen, cfg.Gateway.Authority, cfg.Gateway.Name = addr, e.APIURL, "edge-gw-cred"
	tf := filepath.Join(t.TempDir(), "gateway-token")
	os.WriteFile(tf, []byte(gc.Token+"\n"), 0o600)
	cfg.Gateway.AuthorityTokenFile = tf
	stopped := make(chan error, 1)
	go func() { stopped <- server.RunGateway(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	servertest.WaitListening(t, addr)
	gw := "http://" + addr
	m := e.Member(5)
	tok := e.Issue(t, secret, m)
	within := func(want int, reason string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, r := servertest.Get(t, gw, e.Issue(t, secret, m), "/api/members/"+m+"/profile")
			if st == want && (reason == "" || r == reason) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fresh token via the gateway: %d %q, want %d %q", st, r, want, reason)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	within(200, "")
	if st, _ := servertest.Get(t, gw, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("issued token: %d", st)
	}
	waitEvent(t, arrived, func(ev event.Access) bool { return ev.Gateway == "edge-gw-cred" && ev.Verdict == event.Allow })
	// A stream opened with the credential ends within 1 s of its revocation.
	req, _ := http.NewRequestWithContext(ctx, "GET", e.APIURL+"/v1/ledger/stream", nil)
	req.Header.Set("Authorization", "Bearer "+gc.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ledger stream: %v %v", resp, err)
	}
	ended := make(chan struct{})
	go func() { io.Copy(io.Discard, resp.Body); resp.Body.Close(); close(ended) }()
	if _, err := e.S.Creds.Revoke(ctx, gc.ID, "test", "test"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	select {
	case <-ended:
		t.Logf("stream ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(time.Second):
		t.Fatal("ledger stream of a revoked credential still open after 1 s")
	}
	within(401, string(event.ReasonLedgerUnavailable))
	cancel()
	<-stopped
}

// SCIM tokens made before credentials had roles become scim credentials at
// the next start: they keep provisioning as their provider, are listed, and
// are revoked like any credential.
func TestLegacySCIMTokensCarriedOver(t *testing.T) {
	ctx := context.Background()
	e := start(t)
	cfg := e.Cfg
	cfg.Data = filepath.Join(t.TempDir(), "data")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s1, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := s1.Staff.AddSCIMToken(ctx, "okta", "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	s2, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	srv := httptest.NewServer(s2.Handler())
	defer srv.Close()
	e2 := &env{S: s2, APIURL: srv.URL, Cfg: cfg}
	id := scimUser(t, e2, legacy, "erin@shop.example")
	cs, err := s2.Creds.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var imported *authority.Credential
	for i, c := range cs {
		if c.Role == authority.RoleSCIM && c.Provider == "okta" {
			imported = &cs[i]
		}
	}
	if imported == nil {
		t.Fatalf("legacy token not listed: %+v", cs)
	}
	// The provider's identity stays its own: another provider gets 403.
	other := addCred(t, &env{S: s2, APIURL: srv.URL, Cfg: cfg, API: apiFor(t, srv.URL, cfg.Data)}, "azure", authority.RoleSCIM, "")
	if st, _ := raw(t, e2, "GET", "/scim/v2/Users/"+id, "Bearer "+other.Token, nil); st != 403 {
		t.Fatalf("azure on okta's user: %d", st)
	}
	if _, err := s2.Creds.Revoke(ctx, imported.ID, "test", "rotated"); err != nil {
		t.Fatal(err)
	}
	if st, _ := raw(t, e2, "GET", "/scim/v2/Users/"+id, "Bearer "+legacy, nil); st != 401 {
		t.Fatalf("revoked legacy token: %d", st)
	}
	// A third start imports nothing again.
	s2.Close()
	s3, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if _, err := s3.Creds.Authenticate(ctx, legacy); !errors.Is(err, authority.ErrRevoked) {
		t.Fatalf("revoked legacy token after restart: %v", err)
	}
}

func apiFor(t *testing.T, base, data string) *api.Client {
	t.Helper()
	c, err := api.New(base, filepath.Join(data, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The end of a contract is the one departure that is not refused: when it
// revokes the last admin credential, a critical no_admin_credential alert
// says how to make a new one, and doing so (remove DATA/admin-token,
// restart) gives a working admin credential.
func TestEndDateOfLastAdminAlertsAndRecovers(t *testing.T) {
	ctx := context.Background()
	e := start(t)
	cfg := e.Cfg
	cfg.Data = filepath.Join(t.TempDir(), "data")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s1, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s1.Handler())
	e1 := &env{S: s1, APIURL: srv.URL, Cfg: cfg, API: apiFor(t, srv.URL, cfg.Data)}
	idp := addCred(t, e1, "okta", authority.RoleSCIM, "").Token
	id := scimUser(t, e1, idp, "lead@shop.example")
	lead := addCred(t, e1, "lead", authority.RoleAdmin, id)
	boot, err := s1.Creds.Authenticate(ctx, adminToken(t, e1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Creds.Revoke(ctx, boot.ID, "test", "test"); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)
	if st, m := raw(t, e1, "PATCH", "/scim/v2/Users/"+id, "Bearer "+idp, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "add", "path": staff.StaffSchema + ":endDate", "value": end}},
	}); st != 200 {
		t.Fatalf("future end date: %d %v", st, m)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := s1.Staff.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := raw(t, e1, "GET", "/v1/keys", "Bearer "+lead.Token, nil); st != 401 {
		t.Fatalf("ended contract's admin credential: %d", st)
	}
	found := false
	for _, a := range s1.Detect.Alerts() {
		found = found || (a.Rule == staff.RuleNoAdminCredential && strings.Contains(a.Summary, "remove DATA/admin-token"))
	}
	if !found {
		t.Fatal("no no_admin_credential alert")
	}
	srv.Close()
	s1.Close()
	if err := os.Remove(filepath.Join(cfg.Data, server.AdminTokenFile)); err != nil {
		t.Fatal(err)
	}
	s2, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	srv2 := httptest.NewServer(s2.Handler())
	defer srv2.Close()
	if st, _ := raw(t, &env{S: s2, APIURL: srv2.URL, Cfg: cfg}, "GET", "/v1/keys", "Bearer "+adminToken(t, e1), nil); st != 200 {
		t.Fatalf("new bootstrap admin credential: %d", st)
	}
}

// Scheduled rotations, by the key schedule (Tick) and on the signing path,
// carry custodians over too.
func TestScheduledRotationInheritsCustodians(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Keys.RotateEvery = 300 * time.Millisecond })
	ctx := context.Background()
	alice, err := e.S.Staff.AddPerson(ctx, staff.Person{UserName: "alice"}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	k0, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.S.Staff.AddCustodian(ctx, staff.SigningKey, k0.KID, alice.ID, staff.Operate, "admin:test"); err != nil {
		t.Fatal(err)
	}
	prev := k0.KID
	for name, rotate := range map[string]func(){
		"tick":   func() { e.S.Keys.Tick(ctx) },
		"signer": func() { e.S.Keys.Signer(ctx) },
	} {
		time.Sleep(350 * time.Millisecond)
		rotate()
		k, _, err := e.S.Keys.Signer(ctx)
		if err != nil || k.KID == prev {
			t.Fatalf("%s: no rotation (%v)", name, err)
		}
		prev = k.KID
		cs, err := e.S.Staff.Custodians(ctx, staff.SigningKey, k.KID)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, c := range cs {
			if c.Until == nil && c.Via == "explicit" {
				got[c.StaffID] = true
			}
		}
		if !got[alice.ID] || len(got) != 2 {
			t.Fatalf("%s: custodians of the new key %v", name, got)
		}
	}
}
