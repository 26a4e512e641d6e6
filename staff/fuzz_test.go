package staff

import (
	"context"
	"net/url"
	"testing"
)

// FuzzSCIMUserPOST: any body gets a SCIM answer below 500, and a refused
// body creates nobody.
func FuzzSCIMUserPOST(f *testing.F) {
	for _, name := range []string{"okta_create_user.json", "entra_create_user.json", "okta_put_user.json"} {
		f.Add(fixture(f, name))
	}
	f.Add(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":1}`)
	f.Add(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + StaffSchema + `"],"userName":"x","` + StaffSchema + `":{"endDate":"2025-01-01T00:00:00"}}`)
	f.Add(`[]`)
	f.Add("{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"a\u202eb\"}")
	f.Add("{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"a\",\"name\":{\"givenName\":\"\\u0000\"}}")
	e := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, body string) {
		before := countPeople(t, e)
		code, resp := e.do(t, "POST", "/scim/v2/Users", body)
		if code >= 500 {
			t.Fatalf("status %d for %q: %v", code, body, resp)
		}
		if code != 201 && countPeople(t, e) != before {
			t.Fatalf("refused body (%d) created a user", code)
		}
		if code == 201 {
			if serr := checkStrings("", resp); serr != nil {
				t.Fatalf("created a user from %q with %s", body, serr.Detail)
			}
		}
	})
}

// FuzzSCIMPatch: a PATCH either applies or changes nothing.
func FuzzSCIMPatch(f *testing.F) {
	for _, name := range []string{"okta_deactivate.json", "entra_update_user.json", "entra_disable_user.json"} {
		f.Add(fixture(f, name))
	}
	f.Add(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"emails[type eq \"work\"]"},{"op":"add","path":"roles","value":[{"value":"r"}]},{"op":"replace","path":"x","value":1}]}`)
	f.Add(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"name","value":{"givenName":"a"}}]}`)
	e := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, body string) {
		code, u := e.do(t, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"fuzz","emails":[{"type":"work","value":"a@b"}]}`)
		if code != 201 {
			t.Fatalf("setup: %d %v", code, u)
		}
		id := u["id"].(string)
		defer e.do(t, "DELETE", "/scim/v2/Users/"+id, "")
		before, _ := e.d.Person(context.Background(), id)
		code, resp := e.do(t, "PATCH", "/scim/v2/Users/"+id, body)
		if code >= 500 {
			t.Fatalf("status %d for %q: %v", code, body, resp)
		}
		if code >= 400 {
			after, _ := e.d.Person(context.Background(), id)
			if !after.ModifiedAt.Equal(before.ModifiedAt) || after.Status != before.Status || after.UserName != before.UserName {
				t.Fatalf("refused PATCH (%d) changed the user", code)
			}
		}
	})
}

// FuzzSCIMFilter: any filter is answered with a list or an invalidFilter
// error, never a failure.
func FuzzSCIMFilter(f *testing.F) {
	for _, s := range []string{`userName eq "a"`, `userName eq`, `emails[type eq "work"]`, `not (active eq true)`,
		`meta.lastModified gt "2011-05-13T04:42:34Z"`, `emails.value co "@" or userName sw "u"`, `active eq "x"`, `((`, `groups pr`} {
		f.Add(s)
	}
	e := newEnv(f, nil)
	e.do(f, "POST", "/scim/v2/Users", fixture(f, "okta_create_user.json"))
	f.Fuzz(func(t *testing.T, filter string) {
		for _, ep := range []string{"/scim/v2/Users", "/scim/v2/Groups"} {
			code, resp := e.do(t, "GET", ep+"?filter="+url.QueryEscape(filter), "")
			if code != 200 && !(code == 400 && resp["scimType"] == "invalidFilter") {
				t.Fatalf("%s filter %q: %d %v", ep, filter, code, resp)
			}
		}
	})
}

func countPeople(t *testing.T, e *env) int {
	var n int
	if err := e.d.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM staff_people`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
