package provider_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/provider"
)

// readSeed reads a server fixture with its placeholders filled.
func readSeed(f *testing.F, name string) []byte {
	b, err := os.ReadFile("../server/testdata/providers/" + name)
	if err != nil {
		f.Fatal(err)
	}
	s := string(b)
	for _, ph := range []string{"{{ISS}}", "{{SUB}}", "{{CLIENT}}", "{{JTI}}", "{{PRV}}"} {
		s = strings.ReplaceAll(s, ph, "x-0123456789")
	}
	s = strings.ReplaceAll(s, "{{NOW_MS}}", "1767225600000")
	s = strings.ReplaceAll(s, "{{EXP}}", "1767229200")
	return []byte(s)
}

// ParseRecord accepts only what it documents, and what it accepts keeps
// exactly one id and a canonical aud.
func FuzzParseRecord(f *testing.F) {
	f.Add(readSeed(f, "auth0-action-record.json"))
	f.Add([]byte(`{"iss":"https://a/","jti":"abcdefgh","sub":"s","aud":"x","client_id":"c","exp":1}`))
	f.Add([]byte(`{"iss":"https://a/","prv":"abcdefgh","sub":"s","aud":["y","x","x"],"client_id":"c","exp":1,"kid":"k"}`))
	f.Add([]byte(`{"iss":"https://a/","jti":"a","JTI":"b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := provider.ParseRecord(b)
		if err != nil {
			return
		}
		if (r.JTI == "") == (r.PRV == "") && !(r.JTI == "" && r.PRV == "") {
			t.Fatalf("both ids: %+v", r)
		}
		if r.Issuer == "" {
			t.Fatal("accepted an empty iss")
		}
		for i := 1; i < len(r.Audience); i++ {
			if r.Audience[i-1] >= r.Audience[i] {
				t.Fatalf("aud not canonical: %q", r.Audience)
			}
		}
		var generic map[string]json.RawMessage
		if json.Unmarshal(b, &generic) != nil {
			t.Fatalf("accepted a body that is not a JSON object: %q", b)
		}
	})
}

// ParseHydraHook never accepts a hook without a client and a subject, and
// its answer always carries the prv it was given.
func FuzzParseHydraHook(f *testing.F) {
	f.Add(readSeed(f, "hydra-token-hook.json"))
	f.Add([]byte(`{"session":{},"request":{"client_id":"c","grant_types":["client_credentials"]}}`))
	f.Add([]byte(`{"session":{"client_id":"a"},"request":{"client_id":"b"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := provider.ParseHydraHook(b)
		if err != nil {
			return
		}
		if h.ClientID == "" || h.Subject == "" {
			t.Fatalf("accepted without client or subject: %+v", h)
		}
		out, err := json.Marshal(h.HydraAnswer("prv_x"))
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Session struct {
				AccessToken map[string]any `json:"access_token"`
			} `json:"session"`
		}
		if json.Unmarshal(out, &back) != nil || back.Session.AccessToken["custos_prv"] != "prv_x" {
			t.Fatalf("answer %s lacks the prv", out)
		}
	})
}

// ParseKeycloakEvent: an accepted event has a type and a time, and only
// an error-free issuing event records.
func FuzzParseKeycloakEvent(f *testing.F) {
	f.Add(readSeed(f, "keycloak-event.json"))
	f.Add([]byte(`{"time":1,"type":"CLIENT_LOGIN","error":"invalid_client","details":{"token_id":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := provider.ParseKeycloakEvent(b)
		if err != nil {
			return
		}
		if ev.Type == "" || ev.Time.IsZero() {
			t.Fatalf("accepted %+v", ev)
		}
		if ev.Issues() && ev.Error != "" {
			t.Fatal("an error event records")
		}
	})
}

// Provider tokens are outside input too: whatever the bytes, Verify
// answers without panicking, and never calls a token good unless its
// signature verified under the provider's key.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, provider.Webhook)
	good := fx.idp.sign(f, "ed", fx.claims(nil))
	f.Add(good)
	f.Add("e30.e30.")
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Fuzz(func(t *testing.T, raw string) {
		pt, ok := fx.set.Verify(context.Background(), raw, time.Now())
		if !ok {
			return
		}
		if pt.Reason == "" && raw != good {
			// A different string that verifies is possible only as a
			// re-encoding the JWS library accepts; it must then carry
			// the same claims.
			if pt.Claims == nil || pt.Claims.Subject != "member-1001" {
				t.Fatalf("verified a token that is not the provider's: %q", raw)
			}
		}
	})
}

// FuzzCheckCached: with a recorded token in the verified-token cache, no
// other string is served from the cache, and none passes unless it is a
// re-encoding of that token with its claims.
func FuzzCheckCached(f *testing.F) {
	fx := newFixture(f, provider.Webhook)
	c := fx.claims(nil)
	fx.record(f, rec("jti-0123456789", c["exp"].(int64)))
	good := fx.idp.sign(f, "ed", c)
	if r := fx.check(good); !r.Good() {
		f.Fatalf("%+v", r)
	}
	f.Add(good)
	f.Add(good + "A")
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Fuzz(func(t *testing.T, raw string) {
		r := fx.check(raw)
		if r.Cached && raw != good {
			t.Fatalf("served from the cache of another token: %q", raw)
		}
		if r.Good() && raw != good && r.Claims.Subject != "member-1001" {
			t.Fatalf("passed a token that is not the recorded one: %q", raw)
		}
	})
}
