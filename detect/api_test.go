package detect

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/store"
)

func notIssued(i int, kid string) event.Access {
	a := ev(i)
	a.Reason, a.Verdict, a.Token.KID = event.ReasonNotIssued, event.Deny, kid
	return a
}

func TestHandler(t *testing.T) {
	e := newEngine(t, nil)
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()

	// Stream first, so the alert raised afterwards arrives on it.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/alerts/stream", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	if _, err := rd.ReadString('\n'); err != nil { // the opening comment
		t.Fatal(err)
	}
	e.Process(notIssued(1, "k1"))
	e.Process(notIssued(2, "k2"))
	var got []string
	for len(got) < 2 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var a Alert
			if err := json.Unmarshal([]byte(d), &a); err != nil {
				t.Fatal(err)
			}
			got = append(got, a.Entity)
		}
	}
	if got[0] != "kid:k1" || got[1] != "kid:k2" {
		t.Fatalf("streamed %v", got)
	}

	get := func(path string, status int, into any) {
		t.Helper()
		r, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if r.StatusCode != status {
			t.Fatalf("%s: status %d", path, r.StatusCode)
		}
		if into != nil {
			if err := json.NewDecoder(r.Body).Decode(into); err != nil {
				t.Fatal(err)
			}
		}
	}
	var al struct{ Alerts []Alert }
	get("/v1/alerts?rule=not_issued&limit=1", 200, &al)
	if len(al.Alerts) != 1 || al.Alerts[0].Entity != "kid:k2" {
		t.Fatalf("alerts %+v", al)
	}
	get("/v1/alerts?limit=0", 400, nil)
	var il struct{ Incidents []Incident }
	get("/v1/incidents", 200, &il)
	if len(il.Incidents) != 1 {
		t.Fatalf("incidents %+v", il)
	}
	var one struct {
		Incident Incident
		Alerts   []Alert
	}
	get("/v1/incidents/"+il.Incidents[0].ID, 200, &one)
	if len(one.Alerts) != 2 {
		t.Fatalf("incident %+v", one)
	}
	get("/v1/incidents/nope", 404, nil)
}

func TestOCSF(t *testing.T) {
	e := newEngine(t, nil)
	e.Process(notIssued(1, "k1"))
	o := e.Alerts()[0].OCSF()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m["class_uid"].(float64) != 2004 || m["severity_id"].(float64) != 5 || m["type_uid"].(float64) != 200401 {
		t.Fatalf("ocsf %s", b)
	}
	fi := m["finding_info"].(map[string]any)
	if fi["title"] != RuleNotIssued || fi["uid"] != e.Alerts()[0].ID {
		t.Fatalf("finding_info %v", fi)
	}
}

type recorder struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (r *recorder) add(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	return r.fail
}
func (r *recorder) RevokeKey(_ context.Context, kid, _ string) error {
	return r.add("revoke_key " + kid)
}
func (r *recorder) RevokeToken(_ context.Context, jti, _ string) error {
	return r.add("revoke_token " + jti)
}
func (r *recorder) BlockSource(_ context.Context, p netip.Prefix, until time.Time, _ string) error {
	return r.add("block " + p.String() + " " + until.Format(time.RFC3339))
}
func (r *recorder) ForceRelogin(_ context.Context, s, _ string) error { return r.add("relogin " + s) }

var _ Containment = (*recorder)(nil)

func TestContainment(t *testing.T) {
	cases := []struct {
		name   string
		policy ContainPolicy
		want   string // recorded call; "" none
		target string
		errStr string
	}{
		{"ok/revoke_key", ContainPolicy{Action: ActionRevokeKey}, "revoke_key k1", "k1", ""},
		{"ok/revoke_token", ContainPolicy{Action: ActionRevokeToken}, "revoke_token j1", "j1", ""},
		{"fail/relogin_forged_subject", ContainPolicy{Action: ActionForceRelogin}, "", "1001", "evidence does not implicate"},
		{"ok/block", ContainPolicy{Action: ActionBlockSource, For: time.Hour}, "block 198.51.100.7/32 2025-06-24T04:00:00Z", "198.51.100.7/32", ""},
		{"ok/dry_run", ContainPolicy{Action: ActionRevokeKey, DryRun: true}, "", "k1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, func(c *Config) { c.Containment = map[string]ContainPolicy{RuleNotIssued: tc.policy} })
			rec := &recorder{}
			e.SetContainment(rec)
			e.Process(notIssued(0, "k1"))
			e.Process(notIssued(1, "k1")) // deduplicated: no second action
			acts := e.Actions()
			if len(acts) != 1 || acts[0].Target != tc.target || acts[0].AlertID != e.Alerts()[0].ID || acts[0].DryRun != tc.policy.DryRun ||
				!strings.Contains(acts[0].Error, tc.errStr) || (tc.errStr == "") != (acts[0].Error == "") {
				t.Fatalf("actions %+v", acts)
			}
			if ev := acts[0].Evidence; ev["rule"] != RuleNotIssued || ev["reason"] != "not_issued" || ev["kid"] != "k1" || ev["src_ip"] != "198.51.100.7" {
				t.Fatalf("evidence %v", ev)
			}
			if tc.want == "" && len(rec.calls) != 0 || tc.want != "" && (len(rec.calls) != 1 || rec.calls[0] != tc.want) {
				t.Fatalf("calls %v, want %q", rec.calls, tc.want)
			}
		})
	}
	t.Run("fail/no_containment", func(t *testing.T) {
		e := newEngine(t, func(c *Config) { c.Containment = map[string]ContainPolicy{RuleNotIssued: {Action: ActionRevokeKey}} })
		e.Process(notIssued(0, "k1"))
		if a := e.Actions(); len(a) != 1 || a[0].Error == "" {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("fail/no_target", func(t *testing.T) {
		e := newEngine(t, func(c *Config) { c.Containment = map[string]ContainPolicy{RuleNotIssued: {Action: ActionRevokeToken}} })
		rec := &recorder{}
		e.SetContainment(rec)
		a := notIssued(0, "k1")
		a.Token.JTI = ""
		e.Process(a)
		if x := e.Actions(); len(x) != 1 || !strings.Contains(x[0].Error, "no target") || len(rec.calls) != 0 {
			t.Fatalf("%+v %v", x, rec.calls)
		}
	})
	t.Run("ok/rule_policy", func(t *testing.T) {
		e := newEngine(t, nil)
		rec := &recorder{}
		e.SetContainment(rec)
		if err := e.LoadRulesFrom("r", strings.NewReader("rules:\n  - name: cn\n    expr: country == 'CN'\n    contain: {action: block_source, for: 30m}\n")); err != nil {
			t.Fatal(err)
		}
		a := ev(0)
		a.Country = "CN"
		e.Process(a)
		if len(rec.calls) != 1 || !strings.HasPrefix(rec.calls[0], "block 198.51.100.7/32") {
			t.Fatalf("%v", rec.calls)
		}
	})
}

func TestStore(t *testing.T) {
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	e := newEngine(t, func(c *Config) {
		c.Containment = map[string]ContainPolicy{RuleNotIssued: {Action: ActionRevokeKey, DryRun: true}}
	})
	if err := e.SetStore(ctx, db); err != nil {
		t.Fatal(err)
	}
	e.Process(notIssued(0, "k1"))
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.Process(notIssued(1, "k1"))
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := StoredAlerts(ctx, db, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Count != 2 || got[0].Incident == "" {
		t.Fatalf("stored %+v", got)
	}
	var n int
	_ = db.QueryRow(`SELECT COUNT(*) FROM detect_actions WHERE dry_run = $1`, true).Scan(&n)
	if n != 1 {
		t.Fatalf("actions stored %d", n)
	}
	_ = db.QueryRow(`SELECT COUNT(*) FROM detect_incidents`).Scan(&n)
	if n != 1 {
		t.Fatalf("incidents stored %d", n)
	}
	// Migrating again is a no-op.
	if err := e.SetStore(ctx, db); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	e := newEngine(t, nil)
	ch := make(chan event.Access)
	done := make(chan error)
	go func() { done <- e.Run(context.Background(), ch) }()
	ch <- notIssued(0, "k1")
	close(ch)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(e.Alerts()) != 1 || e.Events() != 1 {
		t.Fatal("Run did not process")
	}
}
