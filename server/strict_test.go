package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Every JSON body of the admin API is read by the one strict rule: a key
// named twice (in any letter case), a miscased or unknown key, or trailing
// data gets 400 invalid_request and changes nothing — no key rotated or
// revoked, no client, SCIM token or custodian added.
func TestAdminBodiesStrict(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	k, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	state := func() string {
		var out []any
		for _, p := range []string{"/v1/keys", "/v1/clients", "/v1/keys/" + k.KID + "/custodians", "/v1/staff"} {
			var v any
			if err := e.API.Do(ctx, "GET", p, nil, &v); err != nil {
				t.Fatalf("GET %s: %v", p, err)
			}
			out = append(out, v)
		}
		b, _ := json.Marshal(out)
		return string(b)
	}
	before := state()
	post := func(path, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.APIURL+path, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+e.API.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/keys/rotate", `{"reason":"a","reason":"b"}`},
		{"/v1/keys/rotate", `{"reason":"a","REASON":"b"}`},
		{"/v1/keys/rotate", `{"Reason":"a"}`},
		{"/v1/keys/" + k.KID + "/revoke", `{"reason":"left","Reason":"other"}`},
		{"/v1/keys/" + k.KID + "/revoke", `{"reason":"left"}{"reason":"again"}`},
		{"/v1/keys/" + k.KID + "/revoke", `{"reason":"left","force":true}`},
		{"/v1/clients", `{"name":"login2","NAME":"admin","audience":["shop-api"]}`},
		{"/v1/clients", `{"name":"login2","audience":["shop-api"],"Audience":["admin-api"]}`},
		{"/v1/clients", `{"Name":"login2","audience":["shop-api"]}`},
		{"/v1/scim/tokens", `{"name":"okta","name":"entra"}`},
		{"/v1/scim/tokens", "{\"name\":\"okta\",\"\u212aey\":1}"},
		{"/v1/keys/" + k.KID + "/custodians", `{"staff_id":"s1","STAFF_ID":"s2","role":"primary"}`},
		{"/v1/ledger/lookup", `{"hash":"00","Hash":"11"}`},
	} {
		if st, ans := post(c.path, c.body); st != http.StatusBadRequest || ans["error"] != "invalid_request" {
			t.Errorf("POST %s %s: %d %v, want 400 invalid_request", c.path, c.body, st, ans)
		}
	}
	if after := state(); after != before {
		t.Fatalf("refused bodies changed state:\n%s\n%s", before, after)
	}
}
