package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect/ingest"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/token"
)

// liveServer is a custos server running in-process with the shop behind its gateway.
type liveServer struct {
	s                   *server.Server
	data, apiURL, gwURL string
	pop                 shop.Population
	cfg                 config.Config
}

func startServer(t *testing.T) *liveServer {
	t.Helper()
	e := servertest.Start(t, shop.Population{Members: 200, Missing: 20, Decoys: 2, Seed: 1}, nil)
	if _, _, err := e.S.Keys.Signer(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &liveServer{s: e.S, cfg: e.Cfg, data: e.Cfg.Data, apiURL: e.APIURL, gwURL: e.GatewayURL, pop: e.Pop}
}

// cli runs the command line and returns standard output, standard error and
// the exit status main would give.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), errb.String(), 0
	}
	errb.WriteString(err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.code
	}
	return out.String(), errb.String(), 2
}

func (ls *liveServer) admin(args ...string) []string {
	return append(args, "--server", ls.apiURL, "--data", ls.data)
}

// request sends one request through the in-process gateway.
func (ls *liveServer) request(t *testing.T, tok, path string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", ls.gwURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// issue registers a client and has the authority issue a token for sub.
func (ls *liveServer) issue(t *testing.T, sub string) string {
	t.Helper()
	o, _, code := cli(t, ls.admin("clients", "add", "login", "--audience", config.DefaultAudience, "--json")...)
	if code != 0 {
		t.Fatalf("clients add: %d %s", code, o)
	}
	var c struct {
		Secret string `json:"client_secret"`
	}
	json.Unmarshal([]byte(o), &c)
	body := fmt.Sprintf(`{"subject":%q,"audience":%q}`, sub, config.DefaultAudience)
	req, _ := http.NewRequest("POST", ls.apiURL+"/v1/tokens", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("issue: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

// countEvents flushes the server's event writer until the SQL command sees
// want events matching where (the writer consumes the bus on its own).
func (ls *liveServer) countEvents(t *testing.T, where string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := ls.s.Forensics.Flush(); err != nil {
			t.Fatal(err)
		}
		o, e, code := cli(t, "sql", "SELECT count(*) AS n FROM events WHERE "+where, "--data", ls.data, "--json")
		if code != 0 {
			t.Fatalf("sql: %d %s", code, e)
		}
		var res struct {
			Columns []string `json:"columns"`
			Rows    [][]any  `json:"rows"`
		}
		if err := json.Unmarshal([]byte(o), &res); err != nil || len(res.Rows) != 1 || res.Columns[0] != "n" {
			t.Fatalf("sql --json: %v %q", err, o)
		}
		if n := int(res.Rows[0][0].(float64)); n == want {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%d events where %s, want %d", n, where, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Events written through the gateway: sql counts them, scope finds the one
// exposure and the forged attempt (from indicators and from the incident),
// incidents show the clocks, exports land in --out, and unreadable files
// fail the scope unless --allow-partial.
func TestScopeSQLAndIncidents(t *testing.T) {
	ls := startServer(t)
	m1, m2 := fmt.Sprint(ls.pop.MemberID(1)), fmt.Sprint(ls.pop.MemberID(2))
	if st := ls.request(t, ls.issue(t, m1), "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("issued token: %d", st)
	}
	k, signer, err := ls.s.Keys.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged, err := token.Sign(signer, k.Alg, k.KID, token.Claims{Issuer: ls.cfg.Issuer, Subject: m2, Audience: config.DefaultAudience,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(), JTI: "forged-cli", ClientID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if st := ls.request(t, forged, "/api/members/"+m2+"/orders"); st != 401 {
		t.Fatalf("forged token: %d", st)
	}
	ls.countEvents(t, "token_kid = '"+k.KID+"'", 2)

	// Text table.
	o, _, code := cli(t, "sql", "SELECT reason, status FROM events ORDER BY time", "--data", ls.data)
	if code != 0 || !strings.Contains(o, "REASON") || !strings.Contains(o, "not_issued") {
		t.Fatalf("sql table: %d %q", code, o)
	}
	if _, e, code := cli(t, "sql", "DELETE FROM events", "--data", ls.data); code != 2 {
		t.Fatalf("sql write: %d %s", code, e)
	}

	out := filepath.Join(t.TempDir(), "out")
	o, e, code := cli(t, "scope", "--indicator", "kid:"+k.KID, "--data", ls.data, "--out", out, "--json", "--quiet")
	if code != 0 {
		t.Fatalf("scope: %d %s", code, e)
	}
	var rep forensics.Report
	if err := json.Unmarshal([]byte(o), &rep); err != nil {
		t.Fatal(err)
	}
	if sc := rep.Scope; sc.Subjects != 1 || sc.Exposures != 1 || sc.Attempts != 1 || rep.Partial {
		t.Fatalf("scope: %+v", sc)
	}
	for _, f := range []string{"notification.csv", "notification.parquet", "report.md", "report.json"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(out, "notification.csv"))
	if lines := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], m1+",") {
		t.Fatalf("notification.csv %q", csv)
	}

	// The incident: clocks from its awareness, indicators from its alerts.
	var incID string
	deadline := time.Now().Add(5 * time.Second)
	for incID == "" {
		o, _, code = cli(t, ls.admin("incidents", "list", "--json")...)
		var l struct {
			Incidents []struct {
				ID    string   `json:"id"`
				Rules []string `json:"rules"`
			} `json:"incidents"`
		}
		if code != 0 || json.Unmarshal([]byte(o), &l) != nil {
			t.Fatalf("incidents list: %d %q", code, o)
		}
		for _, inc := range l.Incidents {
			if strings.Contains(strings.Join(inc.Rules, ","), "not_issued") {
				incID = inc.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no not_issued incident")
		}
		time.Sleep(20 * time.Millisecond)
	}
	o, e, code = cli(t, ls.admin("incidents", "show", incID, "--json")...)
	var show incidentView
	if code != 0 || json.Unmarshal([]byte(o), &show) != nil || len(show.Alerts) == 0 || len(show.Deadlines) != 4 ||
		!show.Deadlines[0].Due.Equal(show.Incident.Awareness.Add(24*time.Hour)) {
		t.Fatalf("incidents show: %d %s %q", code, e, o)
	}
	o, _, code = cli(t, ls.admin("incidents", "show", incID)...)
	if code != 0 || !strings.Contains(o, "not_issued") || !strings.Contains(o, "GDPR art. 33") {
		t.Fatalf("incidents show text: %d %q", code, o)
	}
	if _, _, code := cli(t, ls.admin("incidents", "show", "in-none")...); code != 2 {
		t.Fatalf("unknown incident: exit %d", code)
	}
	o, e, code = cli(t, ls.admin("scope", "--incident", incID, "--json", "--quiet")...)
	rep = forensics.Report{}
	if code != 0 || json.Unmarshal([]byte(o), &rep) != nil {
		t.Fatalf("scope --incident: %d %s", code, e)
	}
	if rep.Meta.Incident != incID || !rep.Meta.Awareness.Equal(show.Incident.Awareness) || rep.Scope.Exposures != 1 || rep.Scope.Attempts != 1 {
		t.Fatalf("scope --incident: meta %+v scope %+v", rep.Meta, rep.Scope)
	}
	o, e, code = cli(t, ls.admin("incidents", "scope", incID, "--indicator", "jti:forged-cli")...)
	if code != 0 || !strings.Contains(o, "attempts       1") {
		t.Fatalf("incidents scope: %d %s %q", code, e, o)
	}

	// Bad input stops before any scan.
	for name, args := range map[string][]string{
		"fail/bad_ip":        {"scope", "--indicator", "ip:999.1.1.1", "--data", ls.data},
		"fail/unknown_kind":  {"scope", "--indicator", "colour:red", "--data", ls.data},
		"fail/no_indicators": {"scope", "--data", ls.data},
		"fail/no_data":       {"scope", "--indicator", "kid:x"},
	} {
		t.Run(name, func(t *testing.T) {
			if o, e, code := cli(t, args...); code != 2 || o != "" {
				t.Fatalf("exit %d, out %q err %q", code, o, e)
			}
		})
	}

	// An unreadable event file.
	bad := filepath.Join(ls.data, server.EventsDir, "events", "hour=2025-11-01T00", "part-bad.parquet")
	if err := os.MkdirAll(filepath.Dir(bad), 0o750); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bad, []byte("not parquet"), 0o600)
	if _, e, code := cli(t, "scope", "--indicator", "kid:"+k.KID, "--data", ls.data, "--quiet"); code != 2 || !strings.Contains(e, "--allow-partial") {
		t.Fatalf("unreadable file: %d %s", code, e)
	}
	out2 := filepath.Join(t.TempDir(), "partial")
	if o, e, code := cli(t, "scope", "--indicator", "kid:"+k.KID, "--data", ls.data, "--quiet", "--allow-partial", "--out", out2); code != 0 || !strings.HasPrefix(o, "PARTIAL") {
		t.Fatalf("--allow-partial: %d %s %q", code, e, o)
	}
	md, _ := os.ReadFile(filepath.Join(out2, "report.md"))
	if first, _, _ := strings.Cut(string(md), "\n"); !strings.Contains(first, "PARTIAL") || !strings.Contains(first, "part-bad.parquet") {
		t.Fatalf("report.md first line %q", first)
	}
}

// A fresh install passes hygiene, and so does every rotation after it (the
// new key inherits its custodians); a key left without a living custodian
// fails, with one line saying how to name one.
func TestKeysHygieneCommand(t *testing.T) {
	ls := startServer(t)
	ctx := context.Background()
	if o, e, code := cli(t, ls.admin("keys", "hygiene")...); code != 0 || !strings.Contains(o, "no findings") {
		t.Fatalf("fresh install: exit %d %q %s", code, o, e)
	}
	for i := 0; i < 2; i++ {
		if o, e, code := cli(t, ls.admin("keys", "rotate", "--reason", "test")...); code != 0 {
			t.Fatalf("rotate: %d %s %s", code, o, e)
		}
		if o, e, code := cli(t, ls.admin("keys", "hygiene")...); code != 0 || !strings.Contains(o, "no findings") {
			t.Fatalf("after rotation %d: exit %d %q %s", i, code, o, e)
		}
	}
	admin, err := ls.s.Staff.PersonByUserName(ctx, "bootstrap-admin")
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := ls.s.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.s.Staff.RemoveCustodian(ctx, staff.SigningKey, k.KID, admin.ID, "test"); err != nil {
		t.Fatal(err)
	}
	o, e, code := cli(t, ls.admin("keys", "hygiene")...)
	if code != 1 || !strings.Contains(o, "no_living_custodian") || !strings.Contains(o, "name a custodian: custos keys custodians "+k.KID+" --add STAFF_ID") {
		t.Fatalf("orphaned key: exit %d %q %s", code, o, e)
	}
	if o, e, code := cli(t, ls.admin("keys", "hygiene", "--json")...); code != 1 || !strings.Contains(o, `"no_living_custodian"`) {
		t.Fatalf("orphaned key --json: exit %d %q %s", code, o, e)
	}
	ks, err := ls.s.Keys.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o, e, code = cli(t, append(ls.admin("keys", "custodians", "--add", admin.ID, "--role", "administer"), "--", k.KID)...)
	if code != 0 || !strings.Contains(o, admin.ID) || !strings.Contains(o, "administer") {
		t.Fatalf("custodians --add: %d %q %s", code, o, e)
	}
	if o, e, code := cli(t, ls.admin("keys", "hygiene")...); code != 0 || !strings.Contains(o, "no findings") {
		t.Fatalf("after custodians: exit %d %q %s", code, o, e)
	}
	if o, _, code := cli(t, ls.admin("keys", "hygiene", "--max-age", "1ns")...); code != 1 || !strings.Contains(o, "key_too_old") {
		t.Fatalf("--max-age 1ns: exit %d %q", code, o)
	}
	for name, args := range map[string][]string{
		"fail/bad_role":      append(ls.admin("keys", "custodians", "--add", admin.ID, "--role", "owner"), "--", ks[0].KID),
		"fail/role_alone":    append(ls.admin("keys", "custodians", "--role", "operate"), "--", ks[0].KID),
		"fail/unknown_key":   ls.admin("keys", "custodians", "nope"),
		"fail/unknown_staff": append(ls.admin("keys", "custodians", "--add", "nobody"), "--", ks[0].KID),
		"fail/bad_max_age":   ls.admin("keys", "hygiene", "--max-age", "soon"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, e, code := cli(t, args...); code != 2 {
				t.Fatalf("exit %d: %s", code, e)
			}
		})
	}
}

// A log with one bad line: the others arrive, the bad one is named by its
// number on standard error; a log with nothing readable exits 2.
func TestIngestCommand(t *testing.T) {
	ls := startServer(t)
	dir := t.TempDir()
	var b strings.Builder
	base := time.Now().UTC().Truncate(time.Second)
	for i := range 4 {
		if i == 1 {
			b.WriteString("{not json\n")
			continue
		}
		ev := event.Access{Time: base.Add(time.Duration(i) * time.Second), Gateway: "edge-test", RequestID: fmt.Sprintf("r-%d", i),
			Method: "GET", Route: "/api/members/{id}/profile", Status: 200, SrcIP: "198.51.100.7", Verdict: event.Allow,
			Subject: "1001", DataClasses: []string{"name"}}
		line, _ := json.Marshal(ev)
		b.Write(line)
		b.WriteByte('\n')
	}
	good := filepath.Join(dir, "access.jsonl")
	os.WriteFile(good, []byte(b.String()), 0o600)
	o, e, code := cli(t, ls.admin("ingest", good, "--format", "custos", "--batch", "2", "--json")...)
	if code != 0 {
		t.Fatalf("ingest: %d %s", code, e)
	}
	var rep ingest.ForwardReport
	if err := json.Unmarshal([]byte(o), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 4 || rep.Events != 3 || rep.Accepted != 3 || rep.Malformed != 1 || rep.Batches != 2 || !strings.Contains(e, "line 2:") {
		t.Fatalf("report %+v, stderr %q", rep, e)
	}
	ls.countEvents(t, "gateway = 'edge-test' AND src_ip = '198.51.100.7'", 3)

	// nginx's default combined format, with a progress bar on standard error.
	combined := filepath.Join(dir, "access.log")
	stamp := base.In(time.FixedZone("KST", 9*3600)).Format("02/Jan/2006:15:04:05 -0700")
	os.WriteFile(combined, []byte(`198.51.100.8 - - [`+stamp+`] "GET /api/members/1001/profile HTTP/1.1" 200 612 "-" "curl/8.5.0"`+"\n"), 0o600)
	o, e, code = cli(t, ls.admin("ingest", combined, "--format", "nginx", "--progress", "--json")...)
	if code != 0 || json.Unmarshal([]byte(o), &rep) != nil || rep.Accepted != 1 || !strings.Contains(e, "ingest") {
		t.Fatalf("ok/nginx-combined: exit %d: stdout %q stderr %q", code, o, e)
	}
	ls.countEvents(t, "src_ip = '198.51.100.8' AND status = 200", 1)

	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\n[]\n"), 0o600)
	for name, args := range map[string][]string{
		"fail/nothing_readable": ls.admin("ingest", bad, "--format", "custos"),
		"fail/missing_file":     ls.admin("ingest", filepath.Join(dir, "none"), "--format", "custos"),
		"fail/unknown_format":   ls.admin("ingest", good, "--format", "apache"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, e, code := cli(t, args...); code != 2 {
				t.Fatalf("exit %d: %s", code, e)
			}
		})
	}
}

// The admin commands of the README against a running server.
func TestAdminCommands(t *testing.T) {
	ls := startServer(t)
	out, errs, code := cli(t, ls.admin("clients", "add", "login", "--audience", config.DefaultAudience, "--json")...)
	if code != 0 || !strings.Contains(out, `"client_secret": "cs_`) {
		t.Fatalf("clients add: %d %s %s", code, out, errs)
	}
	if _, _, code := cli(t, ls.admin("clients", "add", "login2")...); code != 2 {
		t.Fatalf("clients add without --audience: exit %d, want 2", code)
	}
	out, _, code = cli(t, ls.admin("keys", "list", "--json")...)
	var list struct {
		Keys []struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"keys"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Keys) != 1 {
		t.Fatalf("keys list: %d %s", code, out)
	}
	old := list.Keys[0].KID
	if out, errs, code := cli(t, ls.admin("keys", "rotate", "--reason", "test")...); code != 0 || !strings.Contains(out, "new active key") {
		t.Fatalf("keys rotate: %d %s %s", code, out, errs)
	}
	if _, _, code := cli(t, append(ls.admin("keys", "revoke"), "--", old)...); code != 2 {
		t.Fatalf("keys revoke without --reason: exit %d, want 2", code)
	}
	if out, errs, code := cli(t, append(ls.admin("keys", "revoke", "--reason", "custodian left"), "--", old)...); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("keys revoke: %d %s %s", code, out, errs)
	}
	if k, _ := ls.s.Keys.Lookup(old); k.State != "revoked" {
		t.Fatalf("key %s is %s after keys revoke", old, k.State)
	}
	out, _, code = cli(t, ls.admin("scim", "tokens", "add", "okta", "--json")...)
	if code != 0 || !strings.Contains(out, `"token"`) {
		t.Fatalf("scim tokens add: %d %s", code, out)
	}
	if _, errs, code := cli(t, "keys", "list", "--server", ls.apiURL, "--token-file", "/nonexistent"); code == 0 || !strings.Contains(errs, "admin credential") {
		t.Fatalf("keys list with a missing credential file: %d %s", code, errs)
	}
}

// custos credentials add, list and revoke: tokens shown once, IDs in any
// letter case, bad roles and the last admin refused with exit 2.
func TestCredentialsCommand(t *testing.T) {
	ls := startServer(t)
	out, errs, code := cli(t, ls.admin("credentials", "add", "edge-1", "--role", "gateway", "--json")...)
	var gw struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &gw) != nil || !strings.HasPrefix(gw.Token, "cg_") || gw.ID == "" {
		t.Fatalf("credentials add: %d %s %s", code, out, errs)
	}
	out, _, code = cli(t, ls.admin("credentials", "list")...)
	if code != 0 || !strings.Contains(out, gw.ID) || !strings.Contains(out, "gateway") || strings.Contains(out, gw.Token) {
		t.Fatalf("credentials list: %d %s", code, out)
	}
	out, _, code = cli(t, ls.admin("credentials", "list", "--json")...)
	var list struct {
		Credentials []map[string]any `json:"credentials"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Credentials) != 2 || strings.Contains(out, gw.Token) {
		t.Fatalf("credentials list --json: %d %s", code, out)
	}
	if out, errs, code := cli(t, ls.admin("credentials", "revoke", strings.ToUpper(gw.ID), "--reason", "moved")...); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("credentials revoke: %d %s %s", code, out, errs)
	}
	for name, args := range map[string][]string{
		"fail/revoked_again": ls.admin("credentials", "revoke", gw.ID),
		"fail/unknown_id":    ls.admin("credentials", "revoke", "cr_0000000000000000"),
		"fail/no_role":       ls.admin("credentials", "add", "x"),
		"fail/bad_role":      ls.admin("credentials", "add", "x", "--role", "root"),
		"fail/bad_name":      ls.admin("credentials", "add", "a/b", "--role", "gateway"),
		"fail/no_person":     ls.admin("credentials", "add", "x", "--role", "admin", "--person", "nobody"),
		"fail/last_admin":    ls.admin("credentials", "revoke", list.Credentials[0]["id"].(string)),
	} {
		t.Run(name, func(t *testing.T) {
			if _, e, code := cli(t, args...); code != 2 {
				t.Fatalf("exit %d: %s", code, e)
			}
		})
	}
	// The gateway credential was refused after its revocation; the admin
	// credential still works.
	if _, _, code := cli(t, ls.admin("keys", "list")...); code != 0 {
		t.Fatal("admin credential lost")
	}
}
