package staff

import (
	"encoding/json"
	"strings"
	"testing"
)

// SCIM strings carry no control, bidirectional or zero-width characters:
// every write naming one, in any attribute, by any method, is refused with
// 400 invalidValue and changes nothing.
func TestSCIMControlCharacters(t *testing.T) {
	e := newEnv(t, nil)
	code, u := e.do(t, "POST", "/scim/v2/Users", fixture(t, "okta_create_user.json"))
	mustStatus(t, code, 201, u)
	uid := u["id"].(string)
	code, g := e.do(t, "POST", "/scim/v2/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"ops"}`)
	mustStatus(t, code, 201, g)
	gid := g["id"].(string)

	snapshot := func() string {
		_, a := e.do(t, "GET", "/scim/v2/Users", "")
		_, b := e.do(t, "GET", "/scim/v2/Groups", "")
		s, _ := json.Marshal([]any{a, b})
		return string(s)
	}
	before := snapshot()

	bad := map[string]string{
		"nul": "\x00", "newline": "\n", "cr": "\r", "tab": "\t", "escape": "\x1b", "del": "\x7f",
		"c1-nel": "\u0085", "c1-csi": "\u009b", "rlo": "\u202e", "lro": "\u202d", "rli": "\u2067",
		"pdi": "\u2069", "lrm": "\u200e", "alm": "\u061c", "zwsp": "\u200b", "zwj": "\u200d",
		"bom": "\ufeff", "line-sep": "\u2028",
	}
	user := func(mut func(m map[string]any)) string {
		var m map[string]any
		_ = json.Unmarshal([]byte(fixture(t, "okta_create_user.json")), &m)
		m["userName"], m["externalId"] = "new.user@okta.local", "ext-new"
		mut(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	patch := func(path string, value any) string {
		b, _ := json.Marshal(map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
			"Operations": []any{map[string]any{"op": "replace", "path": path, "value": value}}})
		return string(b)
	}
	for cname, c := range bad {
		writes := []struct{ name, method, path, body string }{
			{"post-userName", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["userName"] = "evil" + c + "@okta.local" })},
			{"post-userName-leading", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["userName"] = c + "admin" })},
			{"post-givenName", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["name"] = map[string]any{"givenName": "Te" + c + "st", "familyName": "User"} })},
			{"post-displayName", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["displayName"] = "Test User" + c })},
			{"post-email", "POST", "/scim/v2/Users", user(func(m map[string]any) {
				m["emails"] = []any{map[string]any{"value": "a" + c + "@okta.local", "type": "work", "primary": true}}
			})},
			{"post-externalId", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["externalId"] = "00u" + c })},
			{"post-attribute-name", "POST", "/scim/v2/Users", user(func(m map[string]any) { m["title"+c] = "x" })},
			{"put-userName", "PUT", "/scim/v2/Users/" + uid, user(func(m map[string]any) { m["userName"] = "test.user" + c + "@okta.local" })},
			{"patch-userName", "PATCH", "/scim/v2/Users/" + uid, patch("userName", "x"+c)},
			{"patch-name", "PATCH", "/scim/v2/Users/" + uid, patch("name", map[string]any{"familyName": c})},
			{"patch-path", "PATCH", "/scim/v2/Users/" + uid, patch("displayName"+c, "x")},
			{"post-group", "POST", "/scim/v2/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":` + quote("sec"+c+"ops") + `}`},
			{"put-group", "PUT", "/scim/v2/Groups/" + gid, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":` + quote(c+"ops") + `}`},
			{"patch-group", "PATCH", "/scim/v2/Groups/" + gid, patch("displayName", "ops"+c)},
		}
		for _, w := range writes {
			t.Run("fail/"+cname+"/"+w.name, func(t *testing.T) {
				code, body := e.do(t, w.method, w.path, w.body)
				mustStatus(t, code, 400, body)
				if got, _ := body["scimType"].(string); got != "invalidValue" {
					t.Fatalf("scimType %q, want invalidValue (%v)", got, body)
				}
				if d, _ := body["detail"].(string); !strings.Contains(d, "character") {
					t.Fatalf("detail %q does not say which character", d)
				}
				if after := snapshot(); after != before {
					t.Fatalf("a refused write changed the directory:\n%s\n%s", before, after)
				}
			})
		}
	}
	t.Run("ok/letters-of-any-script", func(t *testing.T) {
		code, body := e.do(t, "POST", "/scim/v2/Users", user(func(m map[string]any) {
			m["name"] = map[string]any{"givenName": "민준", "familyName": "Kim-Ødegård"}
			m["displayName"] = "김민준 (Ødegård)"
		}))
		mustStatus(t, code, 201, body)
	})
	t.Run("ok/formatted-address-lines", func(t *testing.T) {
		code, body := e.do(t, "POST", "/scim/v2/Users", user(func(m map[string]any) {
			m["userName"], m["externalId"] = "addr.user@okta.local", "ext-addr"
			m["addresses"] = []any{map[string]any{"type": "work", "formatted": "1 Main St\nSeoul"}}
		}))
		mustStatus(t, code, 201, body)
	})
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
