package server_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/staff"
)

// forge signs a token with the server's real active key that the authority
// never issued (the stolen-key case), and returns it with the key's id.
func forge(t *testing.T, e *env, sub, jti string) (string, string) {
	t.Helper()
	k, _, err := e.S.Keys.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e.Forge(t, sub, jti), k.KID
}

// waitIncident polls the API until an incident holds an alert of rule.
func waitIncident(t *testing.T, e *env, rule string) detect.Incident {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out struct {
			Incidents []detect.Incident `json:"incidents"`
		}
		if err := e.API.Do(context.Background(), "GET", "/v1/incidents", nil, &out); err != nil {
			t.Fatal(err)
		}
		for _, inc := range out.Incidents {
			if slices.Contains(inc.Rules, rule) {
				return inc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no incident with rule %s within 5 s", rule)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIndicatorSpecs(t *testing.T) {
	for name, tc := range map[string]struct {
		alerts []detect.Alert
		want   []string
	}{
		"ok/attrs_and_entity": {[]detect.Alert{
			{Entity: "kid:k1", Attrs: map[string]string{"kid": "k1", "jti": "j1", "src_ip": "203.0.113.77"}},
			{Entity: "ip:2001:db8::1", Attrs: map[string]string{"network": "198.51.100.0/24"}},
		}, []string{"ip:198.51.100.0/24", "ip:2001:db8::1", "ip:203.0.113.0/24", "jti:j1", "kid:k1"}},
		"ok/mapped_ipv4": {[]detect.Alert{{Attrs: map[string]string{"src_ip": "::ffff:192.0.2.9"}}}, []string{"ip:192.0.2.0/24"}},
		"fail/nothing_usable": {[]detect.Alert{
			{Entity: "subject:1001", Attrs: map[string]string{"src_ip": "not-an-ip", "kid": "bad\x01kid", "subject": "1001"}},
		}, []string{}},
	} {
		t.Run(name, func(t *testing.T) {
			got := server.IndicatorSpecs(tc.alerts)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A forged token through the in-process gateway opens an incident; scoping it
// finds the key's one exposure and the forged attempt, with the legal clocks
// running from the incident's awareness.
func TestScopeIncident(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret := e.Client(t)
	m1, m2 := e.Member(1), e.Member(2)
	if st, _ := e.Get(t, e.Issue(t, secret, m1), "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("issued token: %d", st)
	}
	forged, kid := forge(t, e, m2, "forged-scope-1")
	if st, reason := e.Get(t, forged, "/api/members/"+m2+"/profile"); st != 401 || reason != "not_issued" {
		t.Fatalf("forged token: %d %q", st, reason)
	}
	inc := waitIncident(t, e, detect.RuleNotIssued)

	// The forensics writer consumes the bus on its own; retry until both
	// events are on disk.
	var ans server.ScopeAnswer
	deadline := time.Now().Add(5 * time.Second)
	for {
		ans = server.ScopeAnswer{}
		if err := e.API.Do(ctx, "POST", "/v1/incidents/"+inc.ID+"/scope", nil, &ans); err != nil {
			t.Fatal(err)
		}
		if ans.Scope.Exposures+ans.Scope.Attempts >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	sc := ans.Scope
	if sc.Subjects != 1 || sc.Members != 1 || sc.Exposures != 1 || sc.Attempts != 1 {
		t.Fatalf("scope: subjects %d members %d exposures %d attempts %d", sc.Subjects, sc.Members, sc.Exposures, sc.Attempts)
	}
	if !slices.Contains(sc.Indicators.KeyIDs, kid) || !slices.Contains(sc.Indicators.JTIs, "forged-scope-1") ||
		!slices.Contains(sc.Indicators.Sources, "127.0.0.0/24") {
		t.Fatalf("derived indicators %+v", sc.Indicators)
	}
	if len(ans.Deadlines) != 4 || !ans.Deadlines[0].Due.Equal(inc.Awareness.Add(24*time.Hour)) {
		t.Fatalf("deadlines %+v from awareness %s", ans.Deadlines, inc.Awareness)
	}

	// Explicit indicators replace the derived ones.
	ans = server.ScopeAnswer{}
	if err := e.API.Do(ctx, "POST", "/v1/incidents/"+inc.ID+"/scope", map[string]any{"jtis": []string{"forged-scope-1"}}, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Scope.Subjects != 0 || ans.Scope.Exposures != 0 || ans.Scope.Attempts != 1 {
		t.Fatalf("jti scope: %+v", ans.Scope)
	}

	for name, tc := range map[string]struct {
		path   string
		body   any
		bearer string
		status int
	}{
		"fail/unknown_field": {"/v1/incidents/" + inc.ID + "/scope", map[string]any{"bogus": 1}, e.API.Token, 400},
		"fail/bad_source":    {"/v1/incidents/" + inc.ID + "/scope", map[string]any{"sources": []string{"300.1.1.1"}}, e.API.Token, 400},
		"fail/no_incident":   {"/v1/incidents/in-nope/scope", nil, e.API.Token, 404},
		"fail/no_credential": {"/v1/incidents/" + inc.ID + "/scope", nil, "", 401},
	} {
		t.Run(name, func(t *testing.T) {
			err := e.API.DoAuth(ctx, "POST", tc.path, tc.bearer, tc.body, nil)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("got %v, want %d", err, tc.status)
			}
		})
	}
}

// A fresh install passes hygiene (the bootstrap identity administers the
// first key), custodians are attributed, and bad requests change nothing.
func TestKeyHygieneAndCustodians(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	k0, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var h server.HygieneAnswer
	if err := e.API.Do(ctx, "GET", "/v1/keys/hygiene", nil, &h); err != nil || len(h.Findings) != 0 || h.Keys != 1 {
		t.Fatalf("fresh server: %+v %v", h, err)
	}
	var people struct {
		Staff []staff.Person `json:"staff"`
	}
	if err := e.API.Do(ctx, "GET", "/v1/staff", nil, &people); err != nil || len(people.Staff) != 1 {
		t.Fatalf("staff %+v %v", people, err)
	}
	admin := people.Staff[0].ID
	var c server.CustodiansAnswer
	if err := e.API.Do(ctx, "GET", "/v1/keys/"+k0.KID+"/custodians", nil, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Custodians) != 1 || c.Custodians[0].StaffID != admin || c.Custodians[0].Role != staff.Administer {
		t.Fatalf("custodians %+v", c)
	}
	// Recording the same custodian again changes nothing.
	if err := e.API.Do(ctx, "POST", "/v1/keys/"+k0.KID+"/custodians", server.AddCustodianBody{StaffID: admin, Role: staff.Administer}, &c); err != nil || len(c.Custodians) != 1 {
		t.Fatalf("custodians %+v %v", c, err)
	}
	h = server.HygieneAnswer{}
	// A one-nanosecond age limit makes every live key a finding.
	if err := e.API.Do(ctx, "GET", "/v1/keys/hygiene?max_age=1ns", nil, &h); err != nil || len(h.Findings) != h.Keys || h.Findings[0].Kind != staff.FindingKeyTooOld {
		t.Fatalf("max_age=1ns: %+v %v", h, err)
	}
	k, _, _ := e.S.Keys.Signer(ctx)
	for name, tc := range map[string]struct {
		method, path string
		body         any
		status       int
	}{
		"fail/bad_max_age":   {"GET", "/v1/keys/hygiene?max_age=soon", nil, 400},
		"fail/unknown_key":   {"GET", "/v1/keys/nope/custodians", nil, 404},
		"fail/unknown_staff": {"POST", "/v1/keys/" + k.KID + "/custodians", server.AddCustodianBody{StaffID: "nobody"}, 404},
		"fail/bad_role":      {"POST", "/v1/keys/" + k.KID + "/custodians", server.AddCustodianBody{StaffID: admin, Role: "owner"}, 400},
	} {
		t.Run(name, func(t *testing.T) {
			err := e.API.Do(ctx, tc.method, tc.path, tc.body, nil)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("got %v, want %d", err, tc.status)
			}
		})
	}
}
